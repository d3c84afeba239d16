#!/usr/bin/env bash
# Smoke check of the interop provider, with node and curl only:
#   npm ci --prefix tests/interop/provider && bash tests/interop/provider/smoke.sh
# Starts provider.js on a free port and walks discovery, the code flow with PKCE through the
# headless interaction, the token exchange with and without `resource`, refresh with rotation
# and reuse detection, revocation, admin revocation, end_session and a restart with
# ADAPTER_FILE. Exits non-zero at the first failed check.
set -euo pipefail
cd "$(dirname "$0")"

CLIENT_ID=smoke-client
CLIENT_SECRET=smoke-secret
REDIRECT_URI=http://127.0.0.1:9/callback
POST_LOGOUT=http://127.0.0.1:9/
RESOURCE=https://api.example.test
TMP=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; [ -s "$TMP/err" ] && sed 's/^/     provider: /' "$TMP/err" >&2; exit 1; }
js() { node -e "$1" "${@:2}"; }                       # run a node one-liner with args
field() { js 'const o=JSON.parse(process.argv[1]);const v=process.argv[2].split(".").reduce((a,k)=>a==null?a:a[k],o);console.log(typeof v==="object"?JSON.stringify(v):v??"")' "$1" "$2"; }
jwt_payload() { js 'console.log(Buffer.from(process.argv[1].split(".")[1],"base64url").toString())' "$1"; }

start_provider() { # [port]
  : >"$TMP/out"
  CLIENT_ID=$CLIENT_ID CLIENT_SECRET=$CLIENT_SECRET REDIRECT_URI=$REDIRECT_URI \
    POST_LOGOUT_REDIRECT_URI=$POST_LOGOUT RESOURCE=$RESOURCE ACCESS_TTL=5 \
    ADAPTER_FILE="$TMP/adapter.json" node provider.js "${1:-0}" >"$TMP/out" 2>"$TMP/err" &
  PID=$!
  for _ in $(seq 50); do grep -q '^READY ' "$TMP/out" && break; sleep 0.1; done
  ISSUER=$(sed -n 's/^READY //p' "$TMP/out")
  [ -n "$ISSUER" ] || fail "provider did not print READY"
  BASE=${ISSUER%/oidc}
  PORT=${BASE##*:}
}

start_provider
ok "provider ready at $ISSUER"

# --- discovery -----------------------------------------------------------------------------
DISCO=$(curl -fsS "$ISSUER/.well-known/openid-configuration")
[ "$(field "$DISCO" issuer)" = "$ISSUER" ] || fail "discovery issuer"
[ "$(field "$DISCO" code_challenge_methods_supported)" = '["S256"]' ] || fail "S256 only"
for k in authorization_endpoint token_endpoint userinfo_endpoint revocation_endpoint end_session_endpoint jwks_uri; do
  [ -n "$(field "$DISCO" $k)" ] || fail "discovery lacks $k"
done
[ "$(field "$DISCO" backchannel_logout_supported)" = true ] || fail "backchannel_logout_supported"
TOKEN=$(field "$DISCO" token_endpoint)
ok "discovery"

# --- authorization code flow with PKCE through the headless interaction ---------------------
# login [resource]: prints "code verifier" (the provider session lives in $TMP/jar)
login() {
  local verifier challenge state nonce url loc hops=0
  verifier=$(js 'console.log(require("crypto").randomBytes(32).toString("base64url"))')
  challenge=$(js 'console.log(require("crypto").createHash("sha256").update(process.argv[1]).digest("base64url"))' "$verifier")
  state=st$RANDOM; nonce=no$RANDOM
  url="$ISSUER/auth?client_id=$CLIENT_ID&response_type=code&redirect_uri=$REDIRECT_URI&scope=openid%20profile%20email%20offline_access&state=$state&nonce=$nonce&code_challenge=$challenge&code_challenge_method=S256&prompt=consent"
  [ -n "${1:-}" ] && url="$url&resource=$1"
  while :; do
    loc=$(curl -sS -o /dev/null -w '%{redirect_url}' -b "$TMP/jar" -c "$TMP/jar" "$url")
    [ -n "$loc" ] || fail "no redirect from $url"
    case "$loc" in "$REDIRECT_URI"*) break ;; esac
    url=$loc; hops=$((hops + 1)); [ $hops -lt 10 ] || fail "redirect loop"
  done
  case "$loc" in *"state=$state"*) ;; *) fail "state not echoed: $loc" ;; esac
  local code=${loc#*code=}; code=${code%%&*}
  [ -n "$code" ] && [ "$code" != "$loc" ] || fail "no code in $loc"
  echo "$code $verifier"
}

token() { # form fields... ; prints the JSON response, HTTP status on the last line
  curl -sS -u "$CLIENT_ID:$CLIENT_SECRET" -w '\n%{http_code}' "$TOKEN" "$@"
}

read -r CODE VERIFIER < <(login "$RESOURCE")
ok "code flow through the headless interaction"

# code exchange with resource: the access token is a JWT for the resource
R=$(token -d grant_type=authorization_code -d "code=$CODE" -d "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER" --data-urlencode "resource=$RESOURCE")
[ "$(tail -n1 <<<"$R")" = 200 ] || fail "code exchange: $R"
R=$(head -n -1 <<<"$R")
AT=$(field "$R" access_token); RT1=$(field "$R" refresh_token); IDT=$(field "$R" id_token)
[ -n "$RT1" ] || fail "no refresh token with offline_access"
[ "$(field "$R" expires_in)" = 5 ] || fail "expires_in: $(field "$R" expires_in)"
[ "$(field "$(jwt_payload "$AT")" aud)" = "$RESOURCE" ] || fail "JWT aud: $(jwt_payload "$AT")"
IDP=$(jwt_payload "$IDT")
[ "$(field "$IDP" sub)" = alice ] && [ "$(field "$IDP" email)" = alice@example.test ] \
  && [ "$(field "$IDP" groups)" = '["staff"]' ] && [ "$(field "$IDP" preferred_username)" = alice ] \
  || fail "ID token claims: $IDP"
ok "code exchange with resource: JWT access token, aud=$RESOURCE; ID token has sub/email/groups"

# a replayed code is invalid_grant
R=$(token -d grant_type=authorization_code -d "code=$CODE" -d "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER")
[ "$(field "$(head -n -1 <<<"$R")" error)" = invalid_grant ] || fail "code replay: $R"
ok "code replay -> invalid_grant"

# --- refresh with rotation ------------------------------------------------------------------
# the code replay above revoked that grant (RFC 6749 4.1.2), so log in again
read -r CODE VERIFIER < <(login "$RESOURCE")
R=$(token -d grant_type=authorization_code -d "code=$CODE" -d "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER")
[ "$(tail -n1 <<<"$R")" = 200 ] || fail "code exchange without resource: $R"
R=$(head -n -1 <<<"$R"); AT=$(field "$R" access_token); RT1=$(field "$R" refresh_token)
case "$AT" in *.*.*) fail "token without resource should be opaque: $AT" ;; esac
UI=$(curl -fsS -H "Authorization: Bearer $AT" "$ISSUER/me") || fail "userinfo with opaque token"
[ "$(field "$UI" sub)" = alice ] || fail "userinfo: $UI"
ok "code exchange without resource: opaque token accepted by userinfo"

R=$(token -d grant_type=refresh_token -d "refresh_token=$RT1" --data-urlencode "resource=$RESOURCE")
[ "$(tail -n1 <<<"$R")" = 200 ] || fail "refresh: $R"
R=$(head -n -1 <<<"$R"); RT2=$(field "$R" refresh_token); AT=$(field "$R" access_token)
[ -n "$RT2" ] && [ "$RT2" != "$RT1" ] || fail "refresh token not rotated"
[ "$(field "$(jwt_payload "$AT")" aud)" = "$RESOURCE" ] || fail "refresh with resource: not a JWT for it"
[ -n "$(field "$R" id_token)" ] || fail "refresh response without id_token"
ok "refresh with resource: rotated refresh token, JWT access token, new ID token"

R=$(token -d grant_type=refresh_token -d "refresh_token=$RT1")
[ "$(field "$(head -n -1 <<<"$R")" error)" = invalid_grant ] || fail "reused refresh token: $R"
R=$(token -d grant_type=refresh_token -d "refresh_token=$RT2")
[ "$(field "$(head -n -1 <<<"$R")" error)" = invalid_grant ] || fail "grant not revoked after reuse: $R"
ok "reuse of a rotated refresh token -> invalid_grant, and the whole grant is revoked"

# --- revocation -----------------------------------------------------------------------------
read -r CODE VERIFIER < <(login "$RESOURCE")
R=$(token -d grant_type=authorization_code -d "code=$CODE" -d "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER")
R=$(head -n -1 <<<"$R"); RT=$(field "$R" refresh_token); IDT=$(field "$R" id_token)
S=$(curl -sS -o /dev/null -w '%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" "$(field "$DISCO" revocation_endpoint)" \
  -d "token=$RT" -d token_type_hint=refresh_token)
[ "$S" = 200 ] || fail "revocation status $S"
R=$(token -d grant_type=refresh_token -d "refresh_token=$RT")
[ "$(field "$(head -n -1 <<<"$R")" error)" = invalid_grant ] || fail "revoked refresh token: $R"
ok "revocation -> refresh gives invalid_grant"

# --- end_session (RP-initiated logout) ------------------------------------------------------
END=$(field "$DISCO" end_session_endpoint)
PAGE=$(curl -sS -b "$TMP/jar" -c "$TMP/jar" -G "$END" --data-urlencode "id_token_hint=$IDT" \
  --data-urlencode "post_logout_redirect_uri=$POST_LOGOUT" --data-urlencode "client_id=$CLIENT_ID" --data-urlencode state=bye)
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' <<<"$PAGE")
[ -n "$XSRF" ] || fail "no logout form: $PAGE"
LOC=$(curl -sS -o /dev/null -w '%{redirect_url}' -b "$TMP/jar" -c "$TMP/jar" "$END/confirm" -d "xsrf=$XSRF" -d logout=yes)
case "$LOC" in "$POST_LOGOUT"*"state=bye"*) ;; *) fail "end_session redirect: $LOC" ;; esac
ok "end_session -> post_logout_redirect_uri"

# --- admin revocation -----------------------------------------------------------------------
read -r CODE VERIFIER < <(login)
R=$(token -d grant_type=authorization_code -d "code=$CODE" -d "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER")
RT=$(field "$(head -n -1 <<<"$R")" refresh_token)
[ "$(field "$(curl -fsS -X POST "$BASE/__test/revoke_grants?sub=alice")" revoked)" -ge 1 ] || fail "revoke_grants"
R=$(token -d grant_type=refresh_token -d "refresh_token=$RT")
[ "$(field "$(head -n -1 <<<"$R")" error)" = invalid_grant ] || fail "refresh after admin revoke: $R"
ok "POST /__test/revoke_grants -> refresh gives invalid_grant"

# --- PKCE is required -----------------------------------------------------------------------
LOC=$(curl -sS -o /dev/null -w '%{redirect_url}' "$ISSUER/auth?client_id=$CLIENT_ID&response_type=code&redirect_uri=$REDIRECT_URI&scope=openid&state=x")
case "$LOC" in *error=invalid_request*) ;; *) fail "authorize without PKCE: $LOC" ;; esac
ok "authorize without code_challenge -> invalid_request"

# --- a restart keeps grants (ADAPTER_FILE) --------------------------------------------------
read -r CODE VERIFIER < <(login)
R=$(token -d grant_type=authorization_code -d "code=$CODE" -d "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER")
RT=$(field "$(head -n -1 <<<"$R")" refresh_token)
EV=$(curl -fsS "$BASE/__test/events")
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
curl -sS -o /dev/null "$BASE/" 2>/dev/null && fail "provider still answering after kill"
start_provider "$PORT"
R=$(token -d grant_type=refresh_token -d "refresh_token=$RT")
[ "$(tail -n1 <<<"$R")" = 200 ] || fail "refresh after restart: $R"
ok "restart on the same port with ADAPTER_FILE: the refresh token still works"

# --- event counters (from before the restart) -----------------------------------------------
[ "$(field "$EV" authorization_code)" = 5 ] || fail "authorization_code count: $EV"
[ "$(field "$EV" refresh_token)" = 1 ] || fail "refresh_token count: $EV"
[ "$(field "$EV" revocations)" = 1 ] && [ "$(field "$EV" refresh_token_revocations)" = 1 ] || fail "revocations: $EV"
[ "$(field "$EV" end_session)" = 1 ] || fail "end_session count: $EV"
[ "$(field "$EV" grant_errors)" = '["invalid_grant","invalid_grant","invalid_grant","invalid_grant","invalid_grant"]' ] || fail "grant_errors: $EV"
ok "event counters: $EV"

echo "$pass passed, 0 failed"
