# One image for api, ray-head, ray-worker and mlflow: trials are pickled on the api/head and unpickled on the
# workers, so every process must run the same code and the same library versions.
FROM python:3.11-slim

# CPU torch by default; for GPUs build with e.g.
#   docker compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
# Dependencies first (cached while only the code changes), then the code itself.
COPY pyproject.toml README.md ./
RUN mkdir -p rdvae workers service \
    && touch rdvae/__init__.py workers/__init__.py service/__init__.py \
    && pip install ".[postgres]" \
    && pip uninstall -y rdvae
COPY rdvae ./rdvae
COPY workers ./workers
COPY service ./service
COPY examples ./examples
RUN pip install --no-deps ".[postgres]" \
    && useradd --create-home --uid 1000 rdvae \
    && mkdir -p /data/datasets /mlartifacts \
    && chown rdvae:rdvae /data /mlartifacts

USER rdvae
EXPOSE 8000 5000 6379
CMD ["rdvae", "serve", "--external", "--host", "0.0.0.0", "--port", "8000"]
