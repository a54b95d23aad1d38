"""Video input: path discovery, frame sampling, decoding (decord / PyAV) in isolated workers, preprocessing."""
