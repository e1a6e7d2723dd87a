"""Pure, vectorized spatial core: numpy arrays in, arrays out. No Kafka, no I/O."""
