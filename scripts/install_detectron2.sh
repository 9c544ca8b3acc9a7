#!/usr/bin/env bash
# Build and install detectron2 0.6 into the venv whose python is $1 (default: .venv/bin/python).
#
# The authors do not publish detectron2 on PyPI. The sdist pb1-detectron2==0.6 holds the official
# v0.6 Python tree (checked file by file, see docs/architecture.md#detectron2-install-and-patches)
# but no C++ sources and no packaged configs, and predates Pillow 10 / NumPy 2. Each patch below
# says why it is needed.
set -euo pipefail

PY=${1:-.venv/bin/python}
# Absolute, without resolving the venv's symlink to the base interpreter.
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
SDIST=pb1-detectron2-0.6.tar.gz
SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

if "$PY" - <<'PYEOF' 2>/dev/null; then
import importlib.metadata as md, detectron2.model_zoo as mz, detectron2.data  # noqa: F401
assert md.version("pb1-detectron2") == "0.6"
mz.get_config_file("COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml")
PYEOF
  echo "detectron2 0.6 already installed"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# pip builds the sdist's metadata to download it, and setup.py imports torch: hence
# --no-build-isolation against the venv's torch. The hash pins the exact file.
"$PY" -m pip download --quiet --no-deps --no-build-isolation -d . "pb1-detectron2==0.6"
echo "$SHA256  $SDIST" | sha256sum -c --quiet -
tar xzf "$SDIST"
cd pb1-detectron2-0.6

# 1. The C++ ops are missing from the sdist. Faster R-CNN uses torchvision's nms/roi_align and
#    none of detectron2's custom ops (deformable conv, rotated boxes), but three modules import
#    detectron2._C at import time, so build an empty extension module. Consequence: use
#    COCOEvaluator(..., use_fast_impl=False).
mkdir -p detectron2/layers/csrc
cat > detectron2/layers/csrc/vision.cpp <<'CPP'
// Empty on purpose: see scripts/install_detectron2.sh.
#include <torch/extension.h>
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
CPP

# 2. setup.py packages configs from a top-level configs/ (symlinked into model_zoo), but the sdist
#    ships them inside detectron2/model_zoo/configs, so nothing matched and model_zoo's
#    get_config_file() could not find any config after install.
mv detectron2/model_zoo/configs configs

# 3. Pillow 10 removed Image.LINEAR (an alias of BILINEAR); without this `import detectron2.data`
#    fails. Upstream fixed it after 0.6.
sed -i 's/Image\.LINEAR/Image.BILINEAR/g' detectron2/data/transforms/transform.py

# 4. NumPy 1.24 removed the np.bool/np.int/np.float/np.str aliases of the builtins.
grep -rlE '\bnp\.(bool|int|float|str)\b' --include='*.py' detectron2 \
  | xargs -r sed -i -E 's/\bnp\.(bool|int|float|str)\b/\1/g'

# 5. NumPy 2 raises on np.array(..., copy=False) when a copy is needed; asarray is the intent.
sed -i 's/np\.array(mask, copy=False)/np.asarray(mask)/' detectron2/layers/mask_ops.py

# pkg_resources (model_zoo.py) is why setuptools is pinned below 81 in requirements/worker.in.
# FORCE_CUDA=0: the empty extension needs no nvcc, even on a GPU host.
FORCE_CUDA=0 MAX_JOBS=2 "$PY" -m pip install --quiet --no-deps --no-build-isolation .

cd / && "$PY" - <<'PYEOF'
import detectron2.data  # noqa: F401  (fails without patch 3)
from detectron2 import model_zoo
model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml")
print("detectron2 0.6 installed")
PYEOF
