"""Code that uses the adapter but defines nothing about it."""

# TypeAdapter TypeAdapter TypeAdapter: we call TypeAdapter.read and TypeAdapter.write.
def convert(adapter, value):
    return adapter.write(None, value)
