"""`vlmcap eval`: a labelled manifest captioned through the batch path and scored, and with
`--report` a page of predictions beside references, looked at in headless Chromium from file://."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from vlmcap.cli import cli


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_eval_scores_a_manifest_and_its_page_shows_each_prediction(
    tiny_bundle, small_synth, tmp_path, open_page, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative --report: the page still finds its sheets once renamed into place
    records, site = tmp_path / "records.jsonl", tmp_path / "eval-page"
    args = ["eval", "--engine", str(tiny_bundle), "--data", str(small_synth["val"]), "--llm-backend", "transformers"]
    args += ["--records", str(records), "--report", "eval-page"]
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 6 and metrics["failed"] == 0
    assert 0 <= metrics["chrf++"] <= 100 and "characters" in metrics["cider_d_tokens"]
    assert set(metrics["attribute_accuracy"]) == {"colour", "shape", "motion", "all"}
    rows = _lines(records)
    assert len(rows) == 6 and all(r["caption"] and r["reference"] for r in rows)
    for r in rows:  # each caption's own scores, and its sheet where the finished site holds it
        assert set(r["scores"]["attributes"]) == {"colour", "shape", "motion"} and 0 <= r["scores"]["chrf++"] <= 100
        assert Path(r["thumbnail"]).is_relative_to(site.resolve() / "thumbs")
        assert Path(r["thumbnail"]).is_file()
        with Image.open(r["thumbnail"]) as image:
            assert image.format == "JPEG"
    share = sum(r["scores"]["attributes"]["colour"] for r in rows) / 6
    assert share == metrics["attribute_accuracy"]["colour"]  # the page's marks add up to the metric
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # built beside and renamed

    again = CliRunner().invoke(cli, args)  # an existing page is kept unless --overwrite, before any work
    assert again.exit_code == 2 and "--report" in again.output and "pass --overwrite" in again.output

    page = open_page((site / "index.html").as_uri())
    page.wait_for_selector("#records tbody tr")
    assert page.locator("html").get_attribute("lang") == "ko"
    assert page.locator("#records tbody tr").count() == 6
    assert page.locator('.card[data-score="scored"] b').inner_text() == "6"
    assert page.locator('.card[data-score="chrF++"] b').inner_text() == str(metrics["chrf++"])
    images = page.locator("td.sheet img.thumb")
    assert images.count() == 6
    sources = images.evaluate_all("images => images.map(i => i.getAttribute('src'))")
    assert all(src.startswith("thumbs/") for src in sources), sources  # inside the folder: it can be moved
    page.wait_for_function("[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    by_video = {r["video"]: r for r in rows}
    for tr in page.locator("#records tbody tr").all():
        record = by_video[tr.get_attribute("data-video")]
        assert tr.locator("td.reference").inner_text() == record["reference"]
        assert tr.locator("td.prediction .text").inner_text() == record["caption"]
        marks = {
            m.get_attribute("data-attribute"): m.get_attribute("class") for m in tr.locator(".attributes span").all()
        }
        assert marks == {k: "hit" if v else "miss" for k, v in record["scores"]["attributes"].items()}

    wrong = sum(not all(r["scores"]["attributes"].values()) for r in rows)
    page.select_option("#which", value="wrong")
    page.wait_for_function(f"document.querySelector('#shown').textContent.startsWith('{wrong} of 6')")
    page.select_option("#which", value="")
    page.select_option("#order", value="worst")
    page.wait_for_function("document.querySelector('#shown').textContent.startsWith('6 of 6')")
    shown = [float(t) for t in page.locator("td.chrf").all_inner_texts()]
    assert shown == sorted(shown)
    assert not page.problems, page.problems
    assert all(url.startswith("file://") for url in page.requests), page.requests
