"""The heavy ML stack installs and runs on a fresh machine: one tiny forward pass of each.

Each framework runs in its own interpreter: TensorFlow and detectron2 in one process segfault
when triton loads after TensorFlow (docs/architecture.md#keras-on-torch), and a test must not
depend on import order.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.ml


def _run(code: str, **env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_detectron2_faster_rcnn_forward_pass():
    out = _run("""
        import json, torch
        from detectron2 import model_zoo
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"))
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 13
        model = build_model(cfg).eval()
        with torch.no_grad():
            res = model([{"image": torch.rand(3, 96, 128) * 255, "height": 96, "width": 128}])
        inst = res[0]["instances"]
        print(json.dumps({"size": list(inst.image_size), "fields": sorted(inst.get_fields())}))
    """)
    assert out["size"] == [96, 128]
    assert {"pred_boxes", "scores", "pred_classes"} <= set(out["fields"])


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_keras_resnet50_forward_pass(backend):
    out = _run(
        """
        import json, numpy as np, keras
        model = keras.applications.ResNet50(
            include_top=False, pooling="avg", weights=None, input_shape=(64, 64, 3))
        x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
        y = np.asarray(model.predict(keras.applications.resnet50.preprocess_input(x), verbose=0))
        print(json.dumps({"backend": keras.backend.backend(), "shape": list(y.shape),
                          "finite": bool(np.isfinite(y).all())}))
    """,
        KERAS_BACKEND=backend,
    )
    assert out == {"backend": backend, "shape": [2, 2048], "finite": True}


def test_tensorflow_forward_pass():
    out = _run(
        """
        import json, tensorflow as tf
        x = tf.ones((1, 8))
        y = tf.keras.layers.Dense(3, kernel_initializer="ones")(x)
        print(json.dumps({"y": y.numpy().tolist()}))
    """,
        KERAS_BACKEND="tensorflow",
    )
    assert out["y"] == [[8.0, 8.0, 8.0]]
