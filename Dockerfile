# The sharded-dataset-operator image: the operator and the converter share it.
#   docker build -t sharded-dataset-operator:dev .        (or podman build)
# The local cluster builds it with buildah from a locally bootstrapped Debian base
# (hack/build-images.sh passes BASE and, for pip behind a private CA, PIP_CERT).
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && echo 'sdo:x:65532:65532:sharded-dataset-operator:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'sdo:x:65532:' >> /etc/group

# Dependencies first (rarely change), the project code last, so a code change rebuilds one small layer.
ARG PIP_CERT=
COPY pyproject.toml /src/pyproject.toml
RUN python3 -m venv /opt/sdo \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml','rb'))['project']['dependencies']))" > /src/requirements.txt \
 && /opt/sdo/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} -r /src/requirements.txt \
 && /opt/sdo/bin/python -m compileall -q /opt/sdo/lib

COPY operator/sharded_dataset_operator /app/sharded_dataset_operator
RUN /opt/sdo/bin/python -m compileall -q /app

ENV PATH=/opt/sdo/bin:$PATH \
    PYTHONPATH=/app
# Non-root; works with a read-only root filesystem.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["python", "-m"]
CMD ["sharded_dataset_operator.main"]
