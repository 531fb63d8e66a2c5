# The portability image: every role of the pipeline is a subcommand of `portability`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY src ./src
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["portability"]
CMD ["--help"]
