//! Media of other servers, fetched with the authenticated federation media
//! endpoint (`/_matrix/federation/v1/media/download`), whose answer is a
//! `multipart/mixed` body: metadata, then the bytes or a `Location` to
//! fetch them from.

use std::time::Duration;

use ruma_common::ServerName;
use ruma_federation_api::authenticated_media::{get_content, FileOrLocation};

use super::client::Limits;
use super::{FederationError, FederationService};

/// A media download may take this long (large files on slow links).
const MEDIA_TIMEOUT: Duration = Duration::from_secs(120);
/// Room for the multipart framing and metadata around the bytes.
const FRAMING_BYTES: usize = 64 * 1024;

/// Another server's media, whole.
pub struct FetchedMedia {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

impl FederationService {
    /// Fetches `mxc://server/media_id`, refusing more than `max_bytes`.
    pub async fn fetch_media(
        &self,
        server: &ServerName,
        media_id: &str,
        max_bytes: u64,
    ) -> Result<FetchedMedia, FederationError> {
        let limits = Limits {
            timeout: MEDIA_TIMEOUT,
            max_bytes: usize::try_from(max_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(FRAMING_BYTES),
        };
        let request = get_content::v1::Request::new(media_id.to_owned());
        let response = self.client.send_limited(server, request, limits).await?;
        let content = match response.content {
            FileOrLocation::File(content) => content,
            FileOrLocation::Location(url) => {
                let bytes = self.client.fetch_url(&url, limits).await?;
                return Ok(FetchedMedia {
                    bytes,
                    content_type: None,
                    filename: None,
                });
            }
            _ => {
                return Err(FederationError::BadResponse {
                    server: server.to_owned(),
                    cause: "an unknown kind of media answer".into(),
                })
            }
        };
        if content.file.len() as u64 > max_bytes {
            return Err(FederationError::TooLarge {
                cap: max_bytes as usize,
            });
        }
        Ok(FetchedMedia {
            bytes: content.file,
            content_type: content.content_type,
            filename: content.content_disposition.and_then(|d| d.filename),
        })
    }
}
