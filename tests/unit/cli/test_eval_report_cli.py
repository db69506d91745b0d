"""``zsad eval --dataset NAME --data-root DIR --report OUT`` on a benchmark in its native layout."""

from __future__ import annotations

import json

from services.cli.main import main
from tests.unit.data.conftest import defect_image_and_mask, normal_image, write_rgb

TINY = ["--backbone", "zsad-tiny-vit", "--random-weights", "--image-size", "64", "--num-workers", "0"]


def test_eval_btad_by_name_and_root_writes_the_report(tmp_path, capsys):
    import cv2

    root = tmp_path / "btad"
    for index in range(2):
        write_rgb(root / f"02/test/ok/{index:04d}.png", normal_image(index))
        image, mask = defect_image_and_mask(10 + index, index)
        write_rgb(root / f"02/test/ko/{10 + index:04d}.png", image)
        (root / "02/ground_truth/ko").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / f"02/ground_truth/ko/{10 + index:04d}.png"), mask)
    out = tmp_path / "report"
    code = main(["eval", "--method", "winclip", *TINY, "--dataset", "btad", "--data-root", str(root),
                 "--report", str(out), "--overlays-per-kind", "1", "--json", str(tmp_path / "r.json")])
    assert code == 0
    assert f"report written to {out / 'index.html'}" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    assert "00_02_roc.png" in page and "00_02_pro.png" in page and "worst_00_02.png" in page
    assert json.loads((tmp_path / "r.json").read_text())["dataset"] == f"btad:{root}"
    assert main(["eval", "--method", "winclip", *TINY, "--dataset", "btad:/x", "--data-root", str(root)]) == 2
    assert "bad_dataset" in capsys.readouterr().err
