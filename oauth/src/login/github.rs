//! GitHub's OAuth web flow, for github.com and GitHub Enterprise Server
//! alike (the web and API bases are configured apart): the authorize URL,
//! then code → access token → `/user`, `/user/emails` and `/user/orgs`.
//!
//! The access token lives only inside [`Github::finish`]; what leaves is
//! the [`Identity`]. GitHub answers token errors with HTTP 200 and an
//! `error` field, and lists the granted scopes comma-separated.

use ::http::StatusCode;
use ::http::header::{ACCEPT, AUTHORIZATION, HeaderName, LINK};
use postern_snapshot::GithubProvider;
use serde::Deserialize;

use super::http::{HttpClient, HttpResponse};
use super::{LoginError, OauthErrorBody, json, with_query};
use crate::identity::Identity;

const PROVIDER: &str = "github";
/// What a login needs: the profile, the e-mail addresses (for the verified
/// primary one) and private org memberships.
pub const SCOPES: &str = "read:user user:email read:org";
const API_MEDIA_TYPE: &str = "application/vnd.github+json";
const ORGS_PER_PAGE: usize = 100;
/// 1000 organisations; past that the list is cut (and a warning logged)
/// rather than a login taking dozens of requests.
const MAX_ORG_PAGES: usize = 10;

/// A configured GitHub OAuth app.
#[derive(Clone)]
pub struct Github {
    client_id: String,
    client_secret: String,
    web_url: String,
    api_url: String,
}

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Github")
            .field("client_id", &self.client_id)
            .field("web_url", &self.web_url)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

impl From<&GithubProvider> for Github {
    fn from(p: &GithubProvider) -> Self {
        Github {
            client_id: p.client_id.clone(),
            client_secret: p.client_secret.clone(),
            web_url: p.web_url.trim_end_matches('/').to_owned(),
            api_url: p.api_url.trim_end_matches('/').to_owned(),
        }
    }
}

impl Github {
    /// Where to send the browser: GitHub's authorize page for this app,
    /// with PKCE (S256) and the scopes a login needs.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str, code_challenge: &str) -> String {
        with_query(
            &format!("{}/login/oauth/authorize", self.web_url),
            &[
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", redirect_uri),
                ("scope", SCOPES),
                ("state", state),
                ("code_challenge", code_challenge),
                ("code_challenge_method", "S256"),
            ],
        )
    }

    /// Exchanges the callback's `code` and reads who logged in. The token
    /// GitHub issued is dropped on return.
    pub async fn finish(
        &self,
        http: &HttpClient,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<Identity, LoginError> {
        let (token, granted) = self
            .exchange(http, code, redirect_uri, code_verifier)
            .await?;
        let api = Api {
            http,
            base: &self.api_url,
            auth: format!("Bearer {token}"),
        };
        // A GitHub App's user token lists no scopes (its permissions are
        // the app's); only a classic OAuth app's list can lack read:org.
        if !granted.is_empty() && !granted.iter().any(|s| s.ends_with(":org") || s == "user") {
            tracing::warn!("GitHub granted no org scope: only public org memberships are visible");
        }
        let (user, email, groups) = tokio::try_join!(api.user(), api.primary_email(), api.orgs())?;
        Ok(Identity {
            provider: PROVIDER.into(),
            subject: user.id.to_string(),
            login: user.login,
            email,
            name: user.name.filter(|n| !n.is_empty()),
            groups,
        })
    }

    /// POST the code; the token and the scopes actually granted.
    async fn exchange(
        &self,
        http: &HttpClient,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<(String, Vec<String>), LoginError> {
        let url = format!("{}/login/oauth/access_token", self.web_url);
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        let resp = http
            .post_form(&url, &[(ACCEPT, "application/json")], &form)
            .await
            .map_err(|e| LoginError::from_http(PROVIDER, e))?;
        if resp.status != StatusCode::OK {
            return Err(LoginError::from_status(PROVIDER, &resp));
        }
        if let Ok(err) = resp.json::<OauthErrorBody>() {
            return Err(LoginError::from_oauth_error(
                PROVIDER,
                &err.error,
                err.error_description.as_deref(),
            ));
        }
        let answer: TokenAnswer = json(PROVIDER, &resp)?;
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| LoginError::bad_answer(PROVIDER, "no access_token in the answer"))?;
        if let Some(kind) = answer.token_type.as_deref()
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(LoginError::bad_answer(PROVIDER, "token_type is not bearer"));
        }
        Ok((token, split_scopes(answer.scope.as_deref().unwrap_or(""))))
    }
}

/// GitHub accepts and returns scopes separated by commas (and sometimes
/// spaces).
fn split_scopes(scope: &str) -> Vec<String> {
    scope
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The REST API as one user's token sees it.
struct Api<'a> {
    http: &'a HttpClient,
    base: &'a str,
    auth: String,
}

impl Api<'_> {
    /// GETs an API path; any answer but a transport failure.
    async fn fetch(&self, path: &str) -> Result<HttpResponse, LoginError> {
        let headers: [(HeaderName, &str); 3] = [
            (AUTHORIZATION, &self.auth),
            (ACCEPT, API_MEDIA_TYPE),
            (
                HeaderName::from_static("x-github-api-version"),
                "2022-11-28",
            ),
        ];
        self.http
            .get(&format!("{}{path}", self.base), &headers)
            .await
            .map_err(|e| LoginError::from_http(PROVIDER, e))
    }

    /// GETs an API path that must answer 200.
    async fn get(&self, path: &str) -> Result<HttpResponse, LoginError> {
        ok(self.fetch(path).await?)
    }

    async fn user(&self) -> Result<User, LoginError> {
        let resp = self.get("/user").await?;
        json(PROVIDER, &resp)
    }

    /// The verified primary address, lowercase. None when the token may
    /// not read addresses (GitHub answers 404 without `user:email`, 403 to
    /// a GitHub App lacking the permission).
    async fn primary_email(&self) -> Result<Option<String>, LoginError> {
        let resp = self.fetch("/user/emails").await?;
        if resp.status == StatusCode::NOT_FOUND
            || (resp.status == StatusCode::FORBIDDEN && !rate_limited(&resp))
        {
            tracing::debug!(
                status = resp.status.as_u16(),
                "GitHub e-mail addresses not readable"
            );
            return Ok(None);
        }
        let emails: Vec<Email> = json(PROVIDER, &ok(resp)?)?;
        Ok(emails
            .into_iter()
            .find(|e| e.primary && e.verified)
            .map(|e| e.email.to_lowercase()))
    }

    /// Every org login, sorted. Pages are numbered here rather than taken
    /// from the `Link` header, so the token only ever goes to the
    /// configured API base; `Link` only says whether a next page exists.
    async fn orgs(&self) -> Result<Vec<String>, LoginError> {
        let mut logins = Vec::new();
        for page in 1..=MAX_ORG_PAGES {
            let resp = self
                .get(&format!("/user/orgs?per_page={ORGS_PER_PAGE}&page={page}"))
                .await?;
            let orgs: Vec<Org> = json(PROVIDER, &resp)?;
            let more = match resp.header(&LINK) {
                Some(link) => has_next(link),
                None => orgs.len() == ORGS_PER_PAGE,
            };
            logins.extend(orgs.into_iter().map(|o| o.login));
            if !more {
                logins.sort();
                logins.dedup();
                return Ok(logins);
            }
        }
        tracing::warn!(
            orgs = logins.len(),
            "GitHub user is in more organisations than are read; the list is cut"
        );
        logins.sort();
        logins.dedup();
        Ok(logins)
    }
}

/// An API answer that must be 200, or the error its status stands for.
fn ok(resp: HttpResponse) -> Result<HttpResponse, LoginError> {
    match resp.status {
        StatusCode::OK => Ok(resp),
        StatusCode::UNAUTHORIZED => Err(LoginError::refused(
            PROVIDER,
            format!("the API refused the access token ({})", resp.target),
        )),
        _ if rate_limited(&resp) => Err(LoginError::Unavailable {
            provider: PROVIDER,
            reason: format!("API rate limit reached ({})", resp.target),
        }),
        _ => Err(LoginError::from_status(PROVIDER, &resp)),
    }
}

/// GitHub signals an exhausted rate limit with 403 (or 429) and no
/// requests remaining.
fn rate_limited(resp: &HttpResponse) -> bool {
    resp.status == StatusCode::TOO_MANY_REQUESTS
        || resp.header(&HeaderName::from_static("x-ratelimit-remaining")) == Some("0")
}

/// Whether an RFC 8288 `Link` header has a `rel="next"` entry.
fn has_next(link: &str) -> bool {
    link.split(',').any(|entry| {
        entry.split(';').skip(1).any(|param| {
            let param = param.trim();
            param
                .strip_prefix("rel=")
                .map(|v| v.trim_matches('"').split(' ').any(|r| r == "next"))
                .unwrap_or(false)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github() -> Github {
        Github::from(&GithubProvider {
            client_id: "cid".into(),
            client_secret: "shh".into(),
            web_url: "https://ghe.example/".into(),
            api_url: "https://ghe.example/api/v3".into(),
        })
    }

    #[test]
    fn authorize_url_has_every_parameter_encoded() {
        let url = github().authorize_url("https://auth.example/cb?x=1", "st&ate", "chal");
        assert_eq!(
            url,
            "https://ghe.example/login/oauth/authorize?client_id=cid\
             &redirect_uri=https%3A%2F%2Fauth.example%2Fcb%3Fx%3D1\
             &scope=read%3Auser+user%3Aemail+read%3Aorg&state=st%26ate\
             &code_challenge=chal&code_challenge_method=S256"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        assert!(!format!("{:?}", github()).contains("shh"));
    }

    #[test]
    fn scopes_split_on_commas() {
        assert_eq!(
            split_scopes("read:org,user:email"),
            ["read:org", "user:email"]
        );
        assert_eq!(split_scopes("a, b"), ["a", "b"]);
        assert!(split_scopes("").is_empty());
    }

    #[test]
    fn link_next_is_found_only_as_a_rel() {
        let link = r#"<https://api/user/orgs?page=2>; rel="next", <https://api/user/orgs?page=5>; rel="last""#;
        assert!(has_next(link));
        assert!(!has_next(r#"<https://api/user/orgs?page=1>; rel="prev""#));
        assert!(!has_next(r#"<https://api/next>; rel="first""#));
    }
}
