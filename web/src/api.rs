//! Talking to the zfvis server: JSON GETs and image uploads through the browser's fetch.

use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, FormData, Request, RequestInit, Response};
use zfvis_api::{ApiError, ErrorCode};

/// A failure worth showing to the user, already in words, with the server's error code when the
/// server answered one (so views can react to `image_not_found`, `overloaded`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: Option<ErrorCode>,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            code: None,
            message,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

pub type ApiResult<T> = Result<T, Failure>;

fn js_message(e: JsValue) -> Failure {
    e.as_string()
        .or_else(|| js_sys::JSON::stringify(&e).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| "unknown browser error".into())
        .into()
}

/// The model this page shows (`?model=ID` in the page's address), `None` for the server's default.
pub fn page_model() -> Option<String> {
    thread_local! {
        static MODEL: Option<String> = web_sys::window()
            .and_then(|w| w.location().search().ok())
            .and_then(|q| {
                q.trim_start_matches('?')
                    .split('&')
                    .find_map(|p| p.strip_prefix("model=").map(str::to_string))
            })
            .filter(|m| zfvis_api::paths::valid_model_id(m));
    }
    MODEL.with(Clone::clone)
}

/// `url` for the page's model: API URLs that name no model get `model=` added (URLs from the
/// server's answers name theirs already; static files are left alone).
pub fn url(url: &str) -> String {
    let api = url.starts_with("/api") || url.starts_with("/visualize/");
    if api && zfvis_api::paths::model_of(url).is_none() {
        zfvis_api::paths::with_model(url, page_model().as_deref())
    } else {
        url.to_string()
    }
}

async fn send(request: Request) -> ApiResult<Response> {
    let window = web_sys::window().ok_or("no window")?;
    let response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| format!("the server could not be reached: {}", js_message(e)))?;
    response.dyn_into::<Response>().map_err(js_message)
}

async fn text(response: &Response) -> ApiResult<String> {
    let promise = response.text().map_err(js_message)?;
    let value = JsFuture::from(promise).await.map_err(js_message)?;
    Ok(value.as_string().unwrap_or_default())
}

async fn decode<T: DeserializeOwned>(response: Response) -> ApiResult<T> {
    let status = response.status();
    let body = text(&response).await?;
    if (200..300).contains(&status) {
        serde_json::from_str(&body)
            .map_err(|e| format!("unexpected answer from the server: {e}").into())
    } else {
        Err(match serde_json::from_str::<ApiError>(&body) {
            Ok(err) => Failure {
                code: Some(err.code),
                message: err.error,
            },
            Err(_) if status == 413 => "the file is too large for the server".into(),
            Err(_) => format!("the server answered {status}: {body}").into(),
        })
    }
}

pub async fn get_json<T: DeserializeOwned>(url: &str) -> ApiResult<T> {
    let request = Request::new_with_str(&self::url(url)).map_err(js_message)?;
    decode(send(request).await?).await
}

/// POSTs `image` as the multipart field `image`.
pub async fn post_image<T: DeserializeOwned>(
    url: &str,
    image: &Blob,
    filename: &str,
) -> ApiResult<T> {
    let form = FormData::new().map_err(js_message)?;
    form.append_with_blob_and_filename("image", image, filename)
        .map_err(js_message)?;
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&form);
    let request = Request::new_with_str_and_init(&self::url(url), &init).map_err(js_message)?;
    decode(send(request).await?).await
}

/// Fetches a static file (a demo image) as a blob.
pub async fn get_blob(url: &str) -> ApiResult<Blob> {
    let request = Request::new_with_str(url).map_err(js_message)?;
    let response = send(request).await?;
    if !response.ok() {
        return Err(format!("could not load {url}: {}", response.status()).into());
    }
    let promise = response.blob().map_err(js_message)?;
    let blob = JsFuture::from(promise).await.map_err(js_message)?;
    blob.dyn_into::<Blob>().map_err(js_message)
}

/// POSTs with no body (actions such as opening a probe image).
pub async fn post_empty<T: DeserializeOwned>(url: &str) -> ApiResult<T> {
    let init = RequestInit::new();
    init.set_method("POST");
    let request = Request::new_with_str_and_init(&self::url(url), &init).map_err(js_message)?;
    decode(send(request).await?).await
}

/// DELETEs `url`; the answer's body is not needed.
pub async fn delete(url: &str) -> ApiResult<()> {
    let init = RequestInit::new();
    init.set_method("DELETE");
    let request = Request::new_with_str_and_init(&self::url(url), &init).map_err(js_message)?;
    let response = send(request).await?;
    if response.ok() {
        Ok(())
    } else {
        Err(format!("the server answered {}", response.status()).into())
    }
}

/// What a POST that may start long work answered: `200` with the result, or `202` with a status.
pub enum Started<S, R> {
    Accepted(S),
    Done(R),
}

/// A POST of `body` as JSON, asking for `accept` when given.
fn json_post(url: &str, body: &impl serde::Serialize, accept: Option<&str>) -> ApiResult<Request> {
    let init = RequestInit::new();
    init.set_method("POST");
    let json = serde_json::to_string(body).map_err(|e| e.to_string())?;
    init.set_body(&JsValue::from_str(&json));
    let headers = web_sys::Headers::new().map_err(js_message)?;
    headers
        .set("content-type", "application/json")
        .map_err(js_message)?;
    if let Some(accept) = accept {
        headers.set("accept", accept).map_err(js_message)?;
    }
    init.set_headers(&headers);
    Request::new_with_str_and_init(&self::url(url), &init).map_err(js_message)
}

/// POSTs `body` as JSON; `202` decodes as `S`, `200` as `R`.
pub async fn post_json<S: DeserializeOwned, R: DeserializeOwned>(
    url: &str,
    body: &impl serde::Serialize,
) -> ApiResult<Started<S, R>> {
    let response = send(json_post(url, body, None)?).await?;
    if response.status() == 202 {
        Ok(Started::Accepted(decode(response).await?))
    } else {
        Ok(Started::Done(decode(response).await?))
    }
}

/// POSTs `body` as JSON asking for Server-Sent Events, and calls `on_event(name, data)` for each
/// event as it arrives (fetch's body stream: `EventSource` can only GET). Ends when the server
/// closes the stream; a 4xx/5xx answer before the stream is an error. Dropping the future stops
/// reading, which closes the connection (the server then stops the work).
pub async fn post_json_events(
    url: &str,
    body: &impl serde::Serialize,
    mut on_event: impl FnMut(&str, &str),
) -> ApiResult<()> {
    let response = send(json_post(url, body, Some("text/event-stream"))?).await?;
    if !response.ok() {
        return decode::<serde_json::Value>(response).await.map(|_| ());
    }
    let reader: web_sys::ReadableStreamDefaultReader = response
        .body()
        .ok_or("the server sent no event stream")?
        .get_reader()
        .unchecked_into();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk: web_sys::ReadableStreamReadResult = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("the event stream broke off: {}", js_message(e)))?
            .unchecked_into();
        if chunk.get_done().unwrap_or(true) {
            return Ok(());
        }
        pending.extend(js_sys::Uint8Array::new(&chunk.get_value()).to_vec());
        // complete events end with a blank line
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = pending.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()))
            };
            if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                on_event(&event, &data);
            }
        }
    }
}
