"""interest-stream: the streaming service around the encoders and the interest state."""
