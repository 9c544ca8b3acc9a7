# The Celery worker: detectron2 + Keras on the torch backend, on a GPU.
#
# torch 2.14.1 from PyPI is a CUDA build whose CUDA libraries come as pip wheels (nvidia-*), so a
# plain Python base is enough; the host needs only the NVIDIA driver and container toolkit.
# The wheel is built for CUDA 13.0 (torch 2.14.1+cu130): the host driver must support it (580+).
# Build stage: compilers for detectron2's (empty) C++ extension and any sdist; the official
# python image already ships the Python headers that python3-dev would provide.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Hash-checking mode: exactly the files `make lock` pinned, and nothing outside the lock. The lock
# also pins pip to 25.0.1, which install_detectron2.sh needs (see scripts/install.sh).
COPY requirements/worker.lock.txt requirements/worker.lock.txt
RUN pip install --require-hashes -r requirements/worker.lock.txt
# The same pinned, patched build of detectron2 0.6 that `make install` does (outside the lock:
# the script checks the sdist's sha256 itself).
COPY scripts/install_detectron2.sh scripts/install_detectron2.sh
RUN bash scripts/install_detectron2.sh /opt/venv/bin/python
# The exact dot products every distance goes through, compiled (shared/search/dots.py).
COPY shared/search/lane_dots.c shared/search/lane_dots.c
COPY scripts/build_native.sh scripts/build_native.sh
RUN bash scripts/build_native.sh


# Runtime stage: the venv without the compilers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    KERAS_BACKEND=torch \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# libgomp1: OpenMP for torch on CPU; libglib2.0-0: OpenCV's core.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
COPY shared/ shared/
COPY --from=build /src/shared/search/_lane_dots.so shared/search/_lane_dots.so
COPY workers/ workers/
COPY training/ training/
COPY migrations/ migrations/
COPY alembic.ini alembic.ini

# Same uid as the web image: both write the shared media volume. Keras caches under $HOME.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/media /data/import \
    && chown app:app /data/media
USER app

# Solo pool, one task at a time: CUDA cannot be re-initialised in a forked child
# (docs/architecture.md#queues-and-processes). Every queue, so this image alone is a complete
# worker; docker-compose.yml splits the queues over two processes.
CMD ["celery", "-A", "workers.celery_app", "worker", "--pool", "solo", "--concurrency", "1", \
     "--prefetch-multiplier", "1", "-Q", "ingest,default,query,lists", "--loglevel", "INFO"]
