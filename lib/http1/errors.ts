/**
 * The one error type of the HTTP/1 parser.
 * @module
 */

/**
 * Input that is not acceptable HTTP/1.1. `status` is what a server answers:
 * 400 (malformed), 414 (request target too long), 431 (head too large), 501
 * (unsupported transfer coding),
 * or 502 when the bytes came from an upstream server.
 */
export class HttpParseError extends Error {
  override name = "HttpParseError";
  constructor(message: string, readonly status: 400 | 414 | 431 | 501 | 502 = 400) {
    super(message);
  }
}
