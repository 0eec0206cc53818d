"""The CPU tour behind `make demo`, shortened."""

import pytest

pytestmark = pytest.mark.slow


def test_tour_shortens_answers(tmp_path, capsys):
    from dler.demo import main

    result = main(["--steps", "4", "--output-dir", str(tmp_path)])
    assert result["last_mean_length"] < 0.8 * result["first_mean_length"]
    assert "Mean answer length" in capsys.readouterr().out
