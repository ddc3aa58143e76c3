"""``predictions.csv`` is CSV: names with commas, quotes and non-ASCII letters survive."""

from partlearn.evaluation.accuracy import write_predictions
from partlearn.report._report import read_predictions


def test_predictions_csv_round_trips_any_name(tmp_path):
    paths = ["a/plain.jpg", "Smith, J./x.jpg", 'say "hi"/y.png', "Zürich/é.jpg"]
    labels = ["plain", "Smith, J.", 'say "hi"', "Zürich"]
    predicted = {"global": labels[::-1], "parts+global": labels}
    write_predictions(tmp_path / "predictions.csv", paths, labels, predicted)
    assert read_predictions(tmp_path) == (paths, labels, predicted)
    first = (tmp_path / "predictions.csv").read_bytes().split(b"\n")[:2]
    assert first == [b"path,label,global,parts+global", b"a/plain.jpg,plain,Z\xc3\xbcrich,plain"]
