# The bridge image (default target) and the example handlers (target `examples`).
#   docker build -t restate-kafka-bridge .
#   docker build --target examples -t restate-bridge-examples .
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install . && useradd --system --uid 10001 --no-create-home bridge

FROM base AS examples
RUN pip install "restate-sdk>=1.3,<2" "hypercorn>=0.17"
COPY examples ./examples
USER bridge
EXPOSE 9080
CMD ["hypercorn", "examples.handlers:app", "--bind", "0.0.0.0:9080"]

FROM base AS bridge
COPY routes.toml /etc/restate-bridge/routes.toml
USER bridge
EXPOSE 9464
ENV BRIDGE_METRICS_LISTEN=0.0.0.0:9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=2)"]
ENTRYPOINT ["restate-bridge"]
CMD ["run", "--routes", "/etc/restate-bridge/routes.toml"]
