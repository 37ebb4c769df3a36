"""Readers for the formats users hold on disk, tf.data / numpy input pipelines, synthetic data."""
