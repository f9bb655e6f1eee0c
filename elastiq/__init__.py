"""elastiq: run language models on machines whose free memory moves under them."""
__version__ = "0.1.0"
