#!/usr/bin/env python3
"""Writes a Wav2Lip-shaped ONNX model (inputs `mel` [N,1,80,16] and `face` [N,6,96,96], output
`output` [N,3,96,96]) whose every run fails inside ONNX Runtime once real audio comes in, for
the tests of what a session does when a batch fails (as a CUDA or ONNX Runtime fault would).

It looks up a one-entry table at index int(mel[0,0,0,0] · 1000): the all-zero warm-up that
`lipsync` runs at load passes (index 0), while any real mel window (silence is −4, speech lies
between −4 and 4) gives an index out of range, which Gather rejects at run time. Its output is
the face input's reference half, so a frame that does pass is the avatar unchanged.

    python3 scripts/make-faulty-wav2lip-onnx.py out.onnx

Needs `onnx` (pip).
"""
import sys

from onnx import TensorProto, helper, save


def main(path):
    i64 = lambda name, values: helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    nodes = [
        # The first mel value, scaled to an index.
        helper.make_node("Slice", ["mel", "zero4", "one4"], ["first"]),
        helper.make_node("Reshape", ["first", "one1"], ["first1"]),
        helper.make_node("Mul", ["first1", "thousand"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
        # A table of one entry: only index 0 (or -1) is in range.
        helper.make_node("Gather", ["table", "index"], ["looked_up"], axis=0),
        # The face input's reference half (channels 3..5), plus the looked-up zero.
        helper.make_node("Slice", ["face", "three", "six", "one_axis"], ["reference"]),
        helper.make_node("Add", ["reference", "looked_up"], ["output"]),
    ]
    initializers = [
        i64("zero4", [0, 0, 0, 0]),
        i64("one4", [1, 1, 1, 1]),
        i64("one1", [1]),
        i64("three", [3]),
        i64("six", [6]),
        i64("one_axis", [1]),
        helper.make_tensor("thousand", TensorProto.FLOAT, [1], [1000.0]),
        helper.make_tensor("table", TensorProto.FLOAT, [1], [0.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "faulty_wav2lip",
        [
            helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["N", 1, 80, 16]),
            helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", 6, 96, 96]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 96, 96])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="facecast")
    model.ir_version = 8
    save(model, path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make-faulty-wav2lip-onnx.py OUT.onnx")
    main(sys.argv[1])
