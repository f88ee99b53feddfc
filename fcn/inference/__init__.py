"""Inference: a checkpoint loaded back into a model (loading: load_model, load), the CPU fast paths
(fastpath), the ONNX Runtime and OpenVINO engines (engines) over the ONNX export (onnx), softmax
and labels with test-time augmentation and sliding windows (segment), and scoring against ground
truth (evaluation: evaluate.py's work).

Stands on fcn.config, fcn.core, fcn.data and fcn.models; never imports fcn.training (its peer), nor
the front ends above (fcn.api, fcn.files, fcn.video, fcn.demo, fcn.export, fcn.cli)."""
