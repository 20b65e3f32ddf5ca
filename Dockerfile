# One image, two entrypoints: `quantramp-operator` (the Deployment in charts/quantramp) and
# `quantramp-trader run` (the trader pods the operator creates).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trader ./trader
COPY crds ./crds
COPY config ./config
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home quantramp
USER 10001
EXPOSE 8080
ENTRYPOINT []
CMD ["quantramp-operator"]
