"""Progress off a terminal: periodic log lines, and one final line however it is closed."""

import logging

from partlearn._progress import progress


def test_the_final_line_is_logged_once_when_iterated_inside_with(caplog):
    caplog.set_level(logging.INFO, logger="partlearn")
    with progress(range(5), desc="work", unit="img", interval=3600) as bar:
        assert sum(bar) == 10
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("work:")]
    assert len(lines) == 1 and lines[0].startswith("work: 5/5 img (100%)"), lines
