//! Every way a request can fail, with its HTTP status: the server answers with these codes and the
//! UI reads them back, so neither can invent a code the other does not know.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $name:ident = $wire:literal, $status:literal;)*) => {
        /// A stable, machine-readable error code (`code` in [`ApiError`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $wire)] $name,)*
            /// A code this build does not know (a newer server); never sent.
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl ErrorCode {
            /// Every code the server may send.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The HTTP status that goes with the code.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$name => $status,)*
                    ErrorCode::Unknown => 500,
                }
            }

            /// The code as it appears on the wire, e.g. `"image_not_found"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $wire,)*
                    ErrorCode::Unknown => "unknown",
                }
            }
        }
    };
}

error_codes! {
    /// The body is not multipart/form-data, or the multipart stream is malformed.
    BadMultipart = "bad_multipart", 400;
    /// The multipart body has no `image` field.
    MissingImage = "missing_image", 400;
    /// The request body could not be read to its end (the connection broke or stalled).
    IncompleteBody = "incomplete_body", 400;
    /// A state-changing request from a web page of another origin.
    ForbiddenOrigin = "forbidden_origin", 403;
    /// A cancellation without the token of the sweep.
    BadToken = "bad_token", 403;
    /// A `Host` the server does not answer to (DNS rebinding).
    UnknownHost = "unknown_host", 403;
    /// No such image id (unknown, or expired from the cache).
    ImageNotFound = "image_not_found", 404;
    /// Layer name other than conv1…conv5 / 1…5.
    UnknownLayer = "unknown_layer", 404;
    /// Map index beyond the layer's maps.
    MapOutOfRange = "map_out_of_range", 404;
    /// Top-k rank beyond the index's k.
    RankOutOfRange = "rank_out_of_range", 404;
    /// A picture name the route does not serve.
    UnknownPicture = "unknown_picture", 404;
    /// Top-9 views need a server started with `--probe`.
    NoProbeIndex = "no_probe_index", 404;
    /// No such occlusion sweep for this image.
    SweepNotFound = "sweep_not_found", 404;
    /// The server has no training snapshots (`serve --evolution DIR`), or none of that epoch.
    NoEvolution = "no_evolution", 404;
    /// No model of that id on this server (`GET /api/models` lists them).
    UnknownModel = "unknown_model", 404;
    /// No such route.
    NotFound = "not_found", 404;
    /// The route exists, but not for this method.
    MethodNotAllowed = "method_not_allowed", 405;
    /// The sweep has not finished yet.
    NotFinished = "not_finished", 409;
    /// The sweep was cancelled before it finished.
    Cancelled = "cancelled", 409;
    /// The request body is over the server's limit.
    BodyTooLarge = "body_too_large", 413;
    /// The image has too many pixels to decode safely.
    ImageTooLarge = "image_too_large", 413;
    /// The request line is too long.
    UriTooLong = "uri_too_long", 414;
    /// The body's media type is not one this route takes.
    UnsupportedMediaType = "unsupported_media_type", 415;
    /// The upload is not an image of a supported format.
    NotAnImage = "not_an_image", 422;
    /// The image is truncated or damaged.
    CorruptImage = "corrupt_image", 422;
    /// The image has no pixels.
    EmptyImage = "empty_image", 422;
    /// One side of the image is more than 32 times the other.
    ImageTooElongated = "image_too_elongated", 422;
    /// The `image` field is empty.
    EmptyUpload = "empty_upload", 422;
    /// A path segment is not of the expected type (e.g. a map that is not a number).
    BadPath = "bad_path", 422;
    /// A query parameter is missing, malformed or out of range.
    BadQuery = "bad_query", 422;
    /// A unit position outside the feature map.
    PositionOutOfRange = "position_out_of_range", 422;
    /// A JSON body that is malformed or has unknown fields.
    BadBody = "bad_body", 422;
    /// Parameters in the body outside their limits.
    BadParameters = "bad_parameters", 422;
    /// An occlusion sweep that would cost more CPU-seconds than the server allows one sweep
    /// (`serve --max-sweep-cpu-secs`); fewer positions (a larger stride) fit.
    SweepOverBudget = "sweep_over_budget", 422;
    /// This client already has as many occlusion sweeps queued or running as the server allows
    /// one client (`serve --max-sweeps-per-client`); retry when one is done.
    TooManySweeps = "too_many_sweeps", 429;
    /// The server is busy; retry after the `Retry-After` seconds.
    Overloaded = "overloaded", 503;
    /// The probe index is still being built (progress in `GET /api/health`).
    IndexBuilding = "index_building", 503;
    /// Something failed inside the server; the message says nothing internal.
    Internal = "internal", 500;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error the API returns: a 4xx/5xx status with this JSON body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// Human-readable, names the problem (e.g. "image is 30000×30000 pixels; the limit is …").
    pub error: String,
    /// Stable machine-readable code, e.g. `not_an_image`, `image_too_large`.
    pub code: ErrorCode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_read_as_unknown() {
        for &code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!((400..600).contains(&code.status()), "{code}");
        }
        let e: ApiError =
            serde_json::from_str(r#"{"error":"x","code":"from_the_future"}"#).unwrap();
        assert_eq!(e.code, ErrorCode::Unknown);
    }

    #[test]
    fn wire_names_are_unique() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
