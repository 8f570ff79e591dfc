package org.example.json;

import java.io.IOException;

/**
 * Converts Java objects to and from JSON.
 */
public abstract class TypeAdapter<T> {

  /** Writes one JSON value for the given object. */
  public abstract void write(JsonWriter out, T value) throws IOException;

  /** Reads one JSON value and converts it to an object. */
  public abstract T read(JsonReader in) throws IOException;

  /** An adapter that writes null for null values. */
  public final TypeAdapter<T> nullSafe() {
    return new NullSafeTypeAdapter<>(this);
  }
}
