"""Baseline ONNX models: linear models of graded quality for the synthetic world, IResNets."""
