//! Checks on the head of a request to an MCP endpoint, before any body is read.

use super::jsonrpc_reply::request_error;
use crate::outcome::{Denial, Reason};

#[derive(Debug, Default)]
pub struct HeadFacts<'a> {
    pub method: &'a str,
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub content_length: Option<&'a str>,
    /// The headers ended the request: there is no body.
    pub end_of_stream: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum McpRequest {
    /// A JSON-RPC POST: hold it until the body is read and authorized.
    Post,
    /// GET (the SSE stream) or DELETE (end of session): authentication only.
    NoBody,
}

pub fn classify(facts: &HeadFacts, max_body_bytes: usize) -> Result<McpRequest, Denial> {
    match facts.method {
        "POST" => {
            if facts.content_encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
                return Err(Denial::new(
                    Reason::UnsupportedMediaType,
                    request_error(415, "Content-Encoding is not supported: send identity JSON"),
                ));
            }
            let json = facts.content_type.is_some_and(|ct| {
                let essence = ct.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
            });
            if !json {
                return Err(Denial::new(
                    Reason::UnsupportedMediaType,
                    request_error(415, "Content-Type must be application/json"),
                ));
            }
            if let Some(len) = facts.content_length {
                match len.trim().parse::<u64>() {
                    Ok(n) if n > max_body_bytes as u64 => {
                        return Err(Denial::new(
                            Reason::BodyTooLarge,
                            request_error(413, &format!("Request body exceeds {max_body_bytes} bytes")),
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(Denial::new(Reason::BadRequest, request_error(400, "Invalid Content-Length")));
                    }
                }
            }
            Ok(McpRequest::Post)
        }
        "GET" | "DELETE" => {
            if facts.end_of_stream {
                Ok(McpRequest::NoBody)
            } else {
                Err(Denial::new(
                    Reason::BadRequest,
                    request_error(400, "GET and DELETE requests to an MCP endpoint have no body"),
                ))
            }
        }
        _ => Err(Denial::new(
            Reason::MethodNotAllowed,
            request_error(405, "Method not allowed: MCP endpoints accept POST, GET and DELETE")
                .with_header("allow", "GET, POST, DELETE".into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post<'a>(ct: Option<&'a str>, enc: Option<&'a str>, len: Option<&'a str>) -> HeadFacts<'a> {
        HeadFacts { method: "POST", content_type: ct, content_encoding: enc, content_length: len, end_of_stream: false }
    }

    fn status(r: Result<McpRequest, Denial>) -> u32 {
        r.map_or_else(|d| d.reply.status, |_| 0)
    }

    #[test]
    fn post_checks() {
        assert_eq!(classify(&post(Some("application/json"), None, Some("10")), 100), Ok(McpRequest::Post));
        assert_eq!(
            classify(&post(Some("Application/JSON; charset=utf-8"), Some("identity"), None), 100),
            Ok(McpRequest::Post)
        );
        assert_eq!(status(classify(&post(Some("text/plain"), None, None), 100)), 415);
        assert_eq!(status(classify(&post(None, None, None), 100)), 415);
        assert_eq!(status(classify(&post(Some("application/json"), Some("gzip"), None), 100)), 415);
        assert_eq!(status(classify(&post(Some("application/json"), None, Some("101")), 100)), 413);
        assert_eq!(status(classify(&post(Some("application/json"), None, Some("x")), 100)), 400);
    }

    #[test]
    fn get_delete_and_others() {
        let get = HeadFacts { method: "GET", end_of_stream: true, ..Default::default() };
        assert_eq!(classify(&get, 100), Ok(McpRequest::NoBody));
        let get_with_body = HeadFacts { method: "GET", end_of_stream: false, ..Default::default() };
        assert_eq!(status(classify(&get_with_body, 100)), 400);
        let put = HeadFacts { method: "PUT", ..Default::default() };
        let Err(Denial { reply, .. }) = classify(&put, 100) else { panic!() };
        assert_eq!((reply.status, reply.header("allow")), (405, Some("GET, POST, DELETE")));
    }
}
