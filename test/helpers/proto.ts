import { create, type DescMessage, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";

/** A message's wire form from its fields (the tests' scripted servers and checks of the generated code). */
export function encode<D extends DescMessage>(schema: D, fields: MessageInitShape<D>): Uint8Array {
  return toBinary(schema, create(schema, fields));
}

/** A message from its wire form; a malformed one throws. */
export function decode<D extends DescMessage>(schema: D, bytes: Uint8Array): MessageShape<D> {
  return fromBinary(schema, bytes);
}
