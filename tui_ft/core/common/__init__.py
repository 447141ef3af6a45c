"""Small shared pieces: the event stream and its tail, atomic writes, paths and ids,
units, process identity and lock files. Nothing here imports torch or another room."""
