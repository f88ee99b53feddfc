# serve.py on the CPU: the Open Inference Protocol (KServe v2) on port 8080.
#
#   docker build -t fcn-serve .
#   docker run --rm -p 8080:8080 -v $PWD/runs/x/checkpoints/best.pt:/models/model:ro fcn-serve
#   curl localhost:8080/v2/health/ready
#
# The checkpoint is mounted at /models/model: a .pt file, or a folder written by
# Segmenter.save_pretrained / `python -m fcn.export --format hub`. Arguments after the image name
# replace CMD (e.g. `--checkpoint /mnt/models --model-name fcn`: deploy/kserve/inferenceservice.yaml).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so that a change of the code reuses this layer. torch's CPU wheels (no CUDA
# libraries: about 200 MB instead of several GB) from PyTorch's own index; everything else from PyPI.
COPY requirements.txt requirements.serve.txt requirements.deploy.txt ./
RUN grep -E '^(onnx|onnxscript|onnxruntime)[<>=~ ]' requirements.deploy.txt > requirements.onnx.txt \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -r requirements.txt -r requirements.serve.txt -r requirements.onnx.txt

COPY fcn ./fcn
COPY serve.py ./

# Not root: a uid with no shell and a home for the caches torch and huggingface_hub write.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin fcn
USER 10001
ENV HOME=/home/fcn

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]

ENTRYPOINT ["python", "serve.py", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--checkpoint", "/models/model", "--model-name", "fcn"]
