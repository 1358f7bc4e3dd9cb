"""Load generator and capacity benchmark for the SFT (issue 4).

``sft-load``  joins N participants in M conferences over the real protocol
              (aiortc for ICE/DTLS/data channel only) and drives the Wire call
              mix from a native sender/receiver (``sftload.native``).
``sft-bench`` starts the systems under test in network namespaces, ramps N and
              reports participants per vCPU (docs/benchmark.md).
"""
