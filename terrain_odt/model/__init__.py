"""The integer model and its toolbox: the bit-exact reference of the co-processor's
trainer (qnn*), the blob format, quantization, TFLite import, conversion of a desktop model
(toolbox), the float reference, and the model's sidecar."""
