from pathlib import Path

from surgesim.schema.reference import render


def test_file_reference_matches_the_schema():
    # docs/files.md is generated; regenerate with `python -m surgesim.schema.reference > docs/files.md`
    assert Path("docs/files.md").read_text() == render()
