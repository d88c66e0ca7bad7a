/**
 * Sans-io HTTP/1.1: the proxy's parsers and framing rules. Nothing here
 * touches a socket; functions take bytes and return results, `undefined`/-1
 * for "need more bytes", or throw {@linkcode HttpParseError} with the status
 * a server should answer.
 *
 * @module
 */

export { HttpParseError } from "./errors.ts";
export { HeaderList, listTokens } from "./headers.ts";
export {
  HeadScanner,
  latin1Decode,
  latin1Encode,
  latin1EncodeInto,
  MAX_TARGET_LENGTH,
  parseRequestHead,
  parseResponseHead,
  quote,
} from "./head.ts";
export type { RequestHead, ResponseHead } from "./head.ts";
export {
  clientKeepAlive,
  connectionTokens,
  fieldLines,
  hopByHop,
  NO_BODY,
  requestFraming,
  responseContentLength,
  responseFraming,
  serverKeepAlive,
  upgradeRequested,
} from "./framing.ts";
export type { BodyFraming } from "./framing.ts";
export { ChunkedDecoder, LAST_CHUNK, writeChunkHeader } from "./chunked.ts";
export type { ChunkedDecoderOptions } from "./chunked.ts";
