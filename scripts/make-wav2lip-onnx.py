#!/usr/bin/env python3
"""Writes an ONNX model with the Wav2Lip (96×96) generator's architecture and seeded random
weights, for tests and benchmarks of `lipsync engine=wav2lip` without the real (non-commercial)
weights.

Architecture (Rudrabha/Wav2Lip, models/wav2lip.py): a face encoder 16-32-64-128-256-512-512
with residual blocks, an audio encoder 32-64-128-256-512, a decoder of transposed convolutions
with skip concatenations, and an output block 80→32→3 + sigmoid. Each "Conv2d" there is
conv + batch norm + ReLU; with random weights the batch norm folds into the convolution, so
here it is conv (+ residual) + ReLU. Inputs `mel` [N,1,80,16] and `face` [N,6,96,96], output
[N,3,96,96] (the names and shapes lipsync expects by default).

    python3 scripts/make-wav2lip-onnx.py out.onnx            # full size: 3.97 G MACs a frame
    python3 scripts/make-wav2lip-onnx.py --width 0.25 out.onnx  # channels ÷ 4, for fast tests
                                                                # (use 0.25, 0.5 or 1)

Needs `numpy` and `onnx` (pip).
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, seed, width, fp16=False):
        self.dtype = np.float16 if fp16 else np.float32
        self.rng = np.random.default_rng(seed)
        self.width = width
        self.nodes, self.inits, self.n = [], [], 0
        self.macs = 0

    def ch(self, c):
        # Channel counts scale with --width; the 3/6/1-channel ends do not.
        return c if c in (1, 3, 6) else max(4, int(round(c * self.width)))

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def weight(self, shape, fan_in):
        # Small enough that activations stay in range through the residual stacks, so the
        # sigmoid output varies instead of saturating at 0 and 1.
        w = self.rng.normal(0.0, np.sqrt(0.5 / fan_in), size=shape).astype(self.dtype)
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(w, name))
        return name

    def bias(self, c):
        name = self.name("b")
        self.inits.append(numpy_helper.from_array((np.zeros(c, np.float32) + 0.01).astype(self.dtype), name))
        return name

    def conv(self, x, cin, cout, k, s, p, out_hw, residual=False, act=True, transpose=False, output_padding=0):
        cin, cout = self.ch(cin), self.ch(cout)
        ks = (k, k) if isinstance(k, int) else k
        st = (s, s) if isinstance(s, int) else s
        pads = [p, p, p, p] if isinstance(p, int) else [p[0], p[1], p[0], p[1]]
        y = self.name("conv")
        if transpose:
            w = self.weight((cin, cout, *ks), cin * ks[0] * ks[1])
            attrs = dict(kernel_shape=list(ks), strides=list(st), pads=pads)
            if output_padding:
                attrs["output_padding"] = [output_padding, output_padding]
            self.nodes.append(helper.make_node("ConvTranspose", [x, w, self.bias(cout)], [y], **attrs))
        else:
            w = self.weight((cout, cin, *ks), cin * ks[0] * ks[1])
            self.nodes.append(helper.make_node("Conv", [x, w, self.bias(cout)], [y], kernel_shape=list(ks), strides=list(st), pads=pads))
        # A convolution does k·k·cin MACs per output value; a transposed one per input value.
        in_hw = (out_hw[0] // st[0], out_hw[1] // st[1]) if transpose else out_hw
        if transpose and p == 0:
            in_hw = (out_hw[0] - ks[0] + 1, out_hw[1] - ks[1] + 1)
        self.macs += cin * cout * ks[0] * ks[1] * in_hw[0] * in_hw[1]
        if residual:
            z = self.name("res")
            self.nodes.append(helper.make_node("Add", [y, x], [z]))
            y = z
        if act:
            r = self.name("relu")
            self.nodes.append(helper.make_node("Relu", [y], [r]))
            y = r
        return y

    def cat(self, a, b):
        y = self.name("cat")
        self.nodes.append(helper.make_node("Concat", [a, b], [y], axis=1))
        return y


def build(seed, width, fp16=False):
    b = Builder(seed, width, fp16)
    C = b.conv
    face_in, mel_in = "face", "mel"
    if fp16:
        # Inputs and output stay float32 (what callers feed); the network runs in float16.
        face_in, mel_in = "face16", "mel16"
        b.nodes.append(helper.make_node("Cast", ["face"], [face_in], to=TensorProto.FLOAT16))
        b.nodes.append(helper.make_node("Cast", ["mel"], [mel_in], to=TensorProto.FLOAT16))
    # Face encoder: (cin, cout, k, s, p, out) with residual blocks after each downsampling.
    face_blocks = [
        [(6, 16, 7, 1, 3, 96, False)],
        [(16, 32, 3, 2, 1, 48, False), (32, 32, 3, 1, 1, 48, True), (32, 32, 3, 1, 1, 48, True)],
        [(32, 64, 3, 2, 1, 24, False)] + [(64, 64, 3, 1, 1, 24, True)] * 3,
        [(64, 128, 3, 2, 1, 12, False)] + [(128, 128, 3, 1, 1, 12, True)] * 2,
        [(128, 256, 3, 2, 1, 6, False)] + [(256, 256, 3, 1, 1, 6, True)] * 2,
        [(256, 512, 3, 2, 1, 3, False), (512, 512, 3, 1, 1, 3, True)],
        [(512, 512, 3, 1, 0, 1, False), (512, 512, 1, 1, 0, 1, False)],
    ]
    x = face_in
    feats = []
    for block in face_blocks:
        for cin, cout, k, s, p, hw, res in block:
            x = C(x, cin, cout, k, s, p, (hw, hw), residual=res)
        feats.append(x)

    # Audio encoder on the [1, 80, 16] mel window.
    a = mel_in
    for cin, cout, k, s, p, hw, res in [
        (1, 32, 3, 1, 1, (80, 16), False), (32, 32, 3, 1, 1, (80, 16), True), (32, 32, 3, 1, 1, (80, 16), True),
        (32, 64, 3, (3, 1), 1, (27, 16), False), (64, 64, 3, 1, 1, (27, 16), True), (64, 64, 3, 1, 1, (27, 16), True),
        (64, 128, 3, 3, 1, (9, 6), False), (128, 128, 3, 1, 1, (9, 6), True), (128, 128, 3, 1, 1, (9, 6), True),
        (128, 256, 3, (3, 2), 1, (3, 3), False), (256, 256, 3, 1, 1, (3, 3), True),
        (256, 512, 3, 1, 0, (1, 1), False), (512, 512, 1, 1, 0, (1, 1), False),
    ]:
        a = C(a, cin, cout, k, s, p, hw, residual=res)

    # Decoder: each block's output is concatenated with the matching encoder feature.
    x = C(a, 512, 512, 1, 1, 0, (1, 1))
    x = b.cat(x, feats.pop())
    decoder = [
        (1024, 512, 3, 1, 0, 0, 3, 1),
        (1024, 512, 3, 2, 1, 1, 6, 2),
        (768, 384, 3, 2, 1, 1, 12, 2),
        (512, 256, 3, 2, 1, 1, 24, 2),
        (320, 128, 3, 2, 1, 1, 48, 2),
        (160, 64, 3, 2, 1, 1, 96, 2),
    ]
    for cin, cout, k, s, p, op, hw, n_res in decoder:
        x = C(x, cin, cout, k, s, p, (hw, hw), transpose=True, output_padding=op)
        for _ in range(n_res):
            x = C(x, cout, cout, 3, 1, 1, (hw, hw), residual=True)
        x = b.cat(x, feats.pop())
    x = C(x, 80, 32, 3, 1, 1, (96, 96))
    x = C(x, 32, 3, 1, 1, 0, (96, 96), act=False)
    if fp16:
        b.nodes.append(helper.make_node("Sigmoid", [x], ["output16"]))
        b.nodes.append(helper.make_node("Cast", ["output16"], ["output"], to=TensorProto.FLOAT))
    else:
        b.nodes.append(helper.make_node("Sigmoid", [x], ["output"]))
    return b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("output")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (1 = Wav2Lip)")
    ap.add_argument("--fp16", action="store_true", help="float16 weights and arithmetic (float32 inputs/output)")
    ap.add_argument("--io-names", default="mel,face,output",
                    help="names of the mel input, face input and output, as other exports name them "
                         "(e.g. audio_sequences,face_sequences,out)")
    args = ap.parse_args()
    b = build(args.seed, args.width, args.fp16)
    graph = helper.make_graph(
        b.nodes,
        "wav2lip96",
        [
            helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["N", 1, 80, 16]),
            helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", 6, 96, 96]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 96, 96])],
        b.inits,
    )
    renames = dict(zip(["mel", "face", "output"], args.io_names.split(",")))
    for v in list(graph.input) + list(graph.output):
        v.name = renames.get(v.name, v.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="facecast")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, args.output)
    params = sum(int(np.prod(t.dims)) for t in b.inits)
    print(f"{args.output}: {params / 1e6:.1f} M parameters, {b.macs / 1e9:.3f} G multiply-accumulates per frame")


if __name__ == "__main__":
    main()
