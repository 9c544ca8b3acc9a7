# The web tier: Flask under gunicorn. Only requirements/web.lock.txt is installed, so no ML
# framework (torch, TensorFlow, Keras, detectron2, OpenCV) is in this image: it stays small and
# starts fast.
# Also runs the one-shot `alembic upgrade head` (compose service `migrate`).

# Build stage: only the exact dot products (shared/search/lane_dots.c), so that the runtime image
# has no compiler. Without them the web answers the same through NumPy, only slower.
FROM python:3.11-slim AS native
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY shared/search/lane_dots.c shared/search/lane_dots.c
COPY scripts/build_native.sh scripts/build_native.sh
RUN bash scripts/build_native.sh


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app

# Requirements first: code edits then reuse the cached dependency layer. Hash-checking mode:
# exactly the files `make lock` pinned, and nothing outside the lock.
COPY requirements/web.lock.txt requirements/web.lock.txt
RUN pip install --require-hashes -r requirements/web.lock.txt

COPY shared/ shared/
COPY --from=native /src/shared/search/_lane_dots.so shared/search/_lane_dots.so
COPY web/ web/
COPY migrations/ migrations/
COPY alembic.ini alembic.ini

# Same uid as the worker image: both write the shared media volume.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/media /data/import \
    && chown app:app /data/media
USER app

EXPOSE 8000
# The Procfile's web command too: web/serve.py builds the gunicorn command line (PORT,
# WEB_CONCURRENCY, WEB_THREADS, OPENBLAS_NUM_THREADS) when the container starts.
CMD ["python", "-m", "web.serve"]
