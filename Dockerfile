# The one image every megaservice container runs: `megaservice serve NAME` (a component) or
# `megaservice gateway PIPELINE_FILE` (the megaservice); `megaservice export` writes the rest.
# Build at the repository's root:   docker build -t megaservice:0.1.0 .
# CPU only: torch comes from PyTorch's CPU index (pip would otherwise take a CUDA build, GBs larger).

FROM python:3.11-slim AS build
ARG TORCH_VERSION=2.13.0
# llama-cpp-python compiles llama.cpp here: GGML_NATIVE=OFF makes code for any x86-64 CPU, not just the builder's
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# The compilers come from the base image's Debian release; pinning their versions would only break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/venv \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY megaservice ./megaservice
RUN pip install --no-cache-dir "./[all]"

FROM python:3.11-slim
# libgomp1: the OpenMP runtime of llama.cpp and onnxruntime (same reason as above for no pin)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 1000 megaservice \
 && useradd --system --uid 1000 --gid megaservice --create-home --home-dir /home/megaservice megaservice \
 && mkdir -p /data/huggingface /pipeline \
 && chown -R megaservice:megaservice /data
COPY --from=build /opt/venv /opt/venv
# Nothing downloads at run time (models ship in packages or are mounted under HF_HOME); /data is what services store.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/data/huggingface \
    MEGASERVICE_DATA_DIR=/data
USER 1000:1000
WORKDIR /home/megaservice
EXPOSE 8888
ENTRYPOINT ["megaservice"]
CMD ["--help"]
