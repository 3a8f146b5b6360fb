/*
 * mod_tsgi exchange, in an Apache child: one request's conversation with a
 * worker (PROTOCOL.md): REQUEST built from request_rec, the client's body as
 * BODY frames, then the reply: a response head applied to r and its body
 * relayed to the client, a DECISION for an access phase, an ERROR, or a
 * TUNNEL (an accepted WebSocket upgrade, relayed by tsgi_tunnel.c); with
 * request-timeout, client hang-ups and worker failures mapped to the statuses
 * PROTOCOL.md lists. While it waits, the thread runs as SCHED_BATCH.
 */
#include "mod_tsgi.h"

#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "util_filter.h"

#include "apr_strings.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

/* The client's socket, to notice a hang-up while the worker computes.
 * Not for HTTP/2 streams: their socket belongs to the whole connection. */
static int client_socket_fd(request_rec *r)
{
    conn_rec *c = r->connection;
    apr_socket_t *sock;
    apr_os_sock_t fd;
    if (c->master)
        return -1;
    sock = ap_get_conn_socket(c);
    if (!sock || apr_os_sock_get(&fd, sock) != APR_SUCCESS)
        return -1;
    return fd;
}

static const char *request_id(request_rec *r)
{
    const char *id = apr_table_get(r->subprocess_env, "UNIQUE_ID");
    if (id)
        return id;
    if (!r->log_id) {
        const char *gen = NULL;
        if (ap_run_generate_log_id(r->connection, r, &gen) == OK && gen)
            r->log_id = gen;
        else
            r->log_id = apr_psprintf(r->pool, "%" APR_PID_T_FMT "-%pp", getpid(), (void *)r);
    }
    return r->log_id;
}

static tsgi_str S(const char *s)
{
    tsgi_str t;
    t.p = s ? s : "";
    t.len = s ? strlen(s) : 0;
    return t;
}

static const char *request_host(request_rec *r)
{
    const char *h = apr_table_get(r->headers_in, "Host");
    apr_port_t port;
    if (h && *h)
        return h;
    port = ap_get_server_port(r);
    if (ap_is_default_port(port, r))
        return ap_get_server_name_for_url(r);
    return apr_psprintf(r->pool, "%s:%u", ap_get_server_name_for_url(r), port);
}

typedef struct {
    request_rec *r;
    tsgi_daemon *d;
    tsgi_conn *c;
    const char *id;
    apr_time_t deadline;
    int phase;
    int upgrade;         /* REQUEST offered the worker a tunnel (TSGI_RF_UPGRADE) */
    apr_off_t declared;  /* Content-Length from the worker, -1 if none */
    apr_off_t relayed;   /* body bytes received from the worker */
} tsgi_call;

/* The client left before the response: nothing can be sent any more. 499
 * (nginx's "client closed request") only shows in the access log. */
static int client_gone(tsgi_call *k)
{
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, k->r, "mod_tsgi: request %s: client went away; worker told to abort",
                  k->id);
    tsgi_conn_abort(k->c, TSGI_ABORT_CLIENT_GONE);
    k->c = NULL;
    k->r->connection->aborted = 1;
    k->r->status = 499;
    return DONE;
}

/* request-timeout counts from now: the worker has that long to make
 * progress (take the next body chunk, answer, send the next frame), so a
 * slow upload or a long stream is not cut while it moves. */
static void arm(tsgi_call *k)
{
    k->deadline = k->d->request_timeout ? apr_time_now() + k->d->request_timeout : 0;
}

/* Builds and sends REQUEST. */
static apr_status_t send_head(tsgi_call *k, int flags, apr_uint64_t content_length)
{
    request_rec *r = k->r;
    const apr_array_header_t *arr = apr_table_elts(r->headers_in);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    tsgi_header *h = apr_palloc(r->pool, sizeof(*h) * (arr->nelts ? arr->nelts : 1));
    tsgi_request q;
    unsigned char *buf;
    size_t size;
    int i, n = 0;
    memset(&q, 0, sizeof(q));
    for (i = 0; i < arr->nelts && n < TSGI_MAX_HEADERS; i++) {
        if (!e[i].key)
            continue;
        h[n].name = S(e[i].key);
        h[n].value = S(e[i].val);
        n++;
    }
    q.phase = (uint8_t)k->phase;
    q.flags = (uint8_t)flags;
    if (ap_ssl_conn_is_ssl(r->connection) || !strcasecmp(ap_http_scheme(r), "https"))
        q.flags |= TSGI_RF_TLS;
    q.client_port = r->useragent_addr ? r->useragent_addr->port : 0;
    q.server_port = r->connection->local_addr ? r->connection->local_addr->port : 0;
    q.content_length = content_length;
    q.start_us = (uint64_t)r->request_time;
    q.method = S(r->method);
    q.uri = S(r->unparsed_uri);
    q.protocol = S(r->protocol);
    q.scheme = S(ap_http_scheme(r));
    q.host = S(request_host(r));
    q.client_ip = S(r->useragent_ip);
    q.server_ip = S(r->connection->local_ip);
    q.user = S(r->user);
    q.id = S(k->id);
    q.base_path = S(((tsgi_dir_conf *)ap_get_module_config(r->per_dir_config, &tsgi_module))->base_path);
    q.headers = h;
    q.nheaders = (uint16_t)n;
    if (k->phase == TSGI_PHASE_LOG) {
        apr_time_t dur = apr_time_now() - r->request_time;
        q.log_status = (uint16_t)r->status;
        q.log_bytes = (uint64_t)(r->bytes_sent > 0 ? r->bytes_sent : 0);
        q.log_duration_us = (uint64_t)(dur > 0 ? dur : 0);
    }
    size = tsgi_request_size(&q);
    if (!size)
        return APR_ENOSPC;
    buf = apr_palloc(r->pool, size);
    tsgi_encode_request(buf, &q);
    return tsgi_conn_write(k->c, buf, size, k->deadline);
}

/* One chunk of the client's body as a BODY frame (header and data in one writev). */
static apr_status_t send_chunk(tsgi_call *k, const char *data, apr_size_t len)
{
    unsigned char hdr[TSGI_HDR_LEN];
    struct iovec iov[2];
    tsgi_encode_body_header(hdr, len, 0);
    arm(k);
    iov[0].iov_base = hdr;
    iov[0].iov_len = TSGI_HDR_LEN;
    iov[1].iov_base = (void *)data;
    iov[1].iov_len = len;
    return tsgi_conn_writev(k->c, iov, 2, k->deadline);
}

/* Forwards the data buckets of bb; sets *eos at the end of the body. OK or an HTTP status. */
static int send_brigade(tsgi_call *k, apr_bucket_brigade *bb, apr_off_t *total, int *eos, apr_status_t *io)
{
    request_rec *r = k->r;
    apr_bucket *b;
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
        const char *data;
        apr_size_t len;
        apr_status_t rv;
        if (APR_BUCKET_IS_EOS(b)) {
            *eos = 1;
            return OK;
        }
        if (APR_BUCKET_IS_METADATA(b))
            continue;
        if ((rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ)) != APR_SUCCESS)
            return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
        if (!len)
            continue;
        *total += len;
        if (k->d->max_body && *total > k->d->max_body) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                          "mod_tsgi: request %s: body exceeds max-body (%" APR_OFF_T_FMT " bytes)", k->id,
                          k->d->max_body);
            return HTTP_REQUEST_ENTITY_TOO_LARGE;
        }
        if ((*io = send_chunk(k, data, len)) != APR_SUCCESS)
            return HTTP_BAD_GATEWAY;
    }
    return OK;
}

/* Streams the client's body as BODY frames, then END. Returns an HTTP
 * status on failure (413, 400...), OK when all was sent. */
static int send_body(tsgi_call *k, apr_status_t *io)
{
    request_rec *r = k->r;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_off_t total = 0;
    int eos = 0, st;
    unsigned char end[TSGI_HDR_LEN];
    *io = APR_SUCCESS;
    while (!eos) {
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ, TSGI_READ_BUF);
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r, "mod_tsgi: request %s: reading the request body failed",
                          k->id);
            return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
        }
        if ((st = send_brigade(k, bb, &total, &eos, io)) != OK)
            return st;
        apr_brigade_cleanup(bb);
    }
    apr_brigade_destroy(bb);
    tsgi_encode_empty(end, TSGI_END);
    arm(k);
    if ((*io = tsgi_conn_write(k->c, end, sizeof(end), k->deadline)) != APR_SUCCESS)
        return HTTP_BAD_GATEWAY;
    return OK;
}

/* No byte that could end a header or status line. */
static int field_ok(const tsgi_str *v)
{
    size_t i;
    for (i = 0; i < v->len; i++) {
        unsigned char ch = (unsigned char)v->p[i];
        if (ch == '\r' || ch == '\n' || ch == '\0')
            return 0;
    }
    return 1;
}

/* Header name must be a token, value free of CR/LF/NUL: nothing the
 * worker sends may split or smuggle a response line. Which headers a handler
 * may send at all (no hop-by-hop names) is the worker's rule, core's
 * isHopByHop; the worker is authenticated by the per-start secret. */
static int header_ok(const tsgi_header *h)
{
    size_t i;
    if (!h->name.len)
        return 0;
    for (i = 0; i < h->name.len; i++) {
        unsigned char ch = (unsigned char)h->name.p[i];
        if (ch <= 32 || ch >= 127 || strchr("()<>@,;:\\\"/[]?={}", ch))
            return 0;
    }
    return field_ok(&h->value);
}

/* One header of RESPONSE_HEAD onto r; 0 when it is unusable. */
static int apply_header(tsgi_call *k, const tsgi_header *h)
{
    request_rec *r = k->r;
    const char *name, *val;
    apr_off_t len;
    char *end;
    if (!header_ok(h)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent an invalid header", k->id);
        return 0;
    }
    name = apr_pstrmemdup(r->pool, h->name.p, h->name.len);
    val = apr_pstrmemdup(r->pool, h->value.p, h->value.len);
    if (!strcasecmp(name, "Content-Type")) {
        ap_set_content_type(r, val);
    } else if (!strcasecmp(name, "Content-Length")) {
        if (apr_strtoff(&len, val, &end, 10) != APR_SUCCESS || *end || len < 0) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: bad Content-Length from worker", k->id);
            return 0;
        }
        ap_set_content_length(r, len);
        k->declared = len;
    } else {
        apr_table_addn(r->headers_out, name, val);
    }
    return 1;
}

/* Applies RESPONSE_HEAD to r. Returns 0 when the head is unusable. */
static int apply_head(tsgi_call *k, const tsgi_response_head *rh)
{
    request_rec *r = k->r;
    tsgi_hiter it;
    tsgi_header h;
    if (rh->status < 200 || rh->status > 999) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent status %u", k->id,
                      rh->status);
        return 0;
    }
    if (!field_ok(&rh->reason)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent an invalid reason phrase", k->id);
        return 0;
    }
    tsgi_headers_begin(&rh->hblock, &it);
    while (tsgi_headers_next(&it, &h))
        if (!apply_header(k, &h))
            return 0;
    r->status = rh->status;
    /* The handler's statusText (the worker checked it: HTAB, SP, VCHAR,
     * obs-text), else Apache's phrase. */
    if (rh->reason.len)
        r->status_line = apr_psprintf(r->pool, "%03u %.*s", rh->status, (int)rh->reason.len, rh->reason.p);
    else
        r->status_line = ap_get_status_line_ex(r->pool, rh->status);
    return 1;
}

/* Error page for a failed exchange; the status goes back to Apache. */
static int fail(tsgi_call *k, int status, apr_status_t rv, const char *what)
{
    ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, k->r, "mod_tsgi: request %s: daemon %s: %s (%d)", k->id, k->d->name,
                  what, status);
    if (status == HTTP_SERVICE_UNAVAILABLE && !apr_table_get(k->r->err_headers_out, "Retry-After"))
        apr_table_setn(k->r->err_headers_out, "Retry-After", "1");
    return status;
}

/* The response after its head: BODY* END, streamed to the client. */

/* The response after its head: one BODY frame into bb (dropped for HEAD). */
static apr_status_t relay_chunk(tsgi_call *k, const tsgi_frame *f, apr_bucket_brigade *bb, apr_size_t *pending,
                                int *flush)
{
    request_rec *r = k->r;
    apr_status_t rv;
    char *data;
    k->relayed += f->len;
    if (f->flags & ~TSGI_BODY_FLUSH)
        return APR_EGENERAL;
    if (k->declared >= 0 && k->relayed > k->declared) {
        /* More than the declared Content-Length would reach the next
         * response on a keep-alive connection: never send it. */
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent more than its Content-Length",
                      k->id);
        return APR_EGENERAL;
    }
    *flush = (f->flags & TSGI_BODY_FLUSH) && !r->header_only;
    if (r->header_only || !f->len)
        return tsgi_conn_read(k->c, NULL, f->len, k->deadline);
    data = apr_bucket_alloc(f->len, bb->bucket_alloc);
    if ((rv = tsgi_conn_read(k->c, (unsigned char *)data, f->len, k->deadline)) != APR_SUCCESS) {
        apr_bucket_free(data);
        return rv;
    }
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_heap_create(data, f->len, apr_bucket_free, bb->bucket_alloc));
    *pending += f->len;
    return APR_SUCCESS;
}

/* END arrived: whether the body's length disagrees with its Content-Length. */
static int length_mismatch(tsgi_call *k)
{
    request_rec *r = k->r;
    if (k->declared < 0 || k->relayed == k->declared || r->header_only || r->status == HTTP_NO_CONTENT ||
        r->status == HTTP_NOT_MODIFIED)
        return 0;
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent %" APR_OFF_T_FMT " body bytes, "
                  "Content-Length said %" APR_OFF_T_FMT, k->id, k->relayed, k->declared);
    return 1;
}

/* A complete response: the rest goes to the client, the connection back to the pool. */
static int relay_end(tsgi_call *k, apr_bucket_brigade *bb)
{
    request_rec *r = k->r;
    conn_rec *cc = r->connection;
    apr_status_t rv;
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(cc->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, bb);
    tsgi_conn_release(k->d, k->c, 1);
    k->c = NULL;
    if (rv != APR_SUCCESS || cc->aborted)
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, r, "mod_tsgi: request %s: client went away", k->id);
    return OK;
}

/* A failure after the head was sent: too late for an error status, so the
 * client connection is cut and sees a truncated response, as mod_proxy does. */
static int relay_cut(tsgi_call *k, apr_bucket_brigade *bb, apr_status_t rv)
{
    request_rec *r = k->r;
    conn_rec *cc = r->connection;
    ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, "mod_tsgi: request %s: daemon %s: %s while streaming the response",
                  k->id, k->d->name, rv == TSGI_IO_TIMEOUT ? "request-timeout" : rv == TSGI_IO_EOF ? "worker closed "
                  "the connection" : "protocol or I/O error");
    tsgi_conn_abort(k->c, rv == TSGI_IO_TIMEOUT ? TSGI_ABORT_TIMEOUT : TSGI_ABORT_ERROR);
    k->c = NULL;
    cc->keepalive = AP_CONN_CLOSE;
    APR_BRIGADE_INSERT_TAIL(bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL, r->pool, cc->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(cc->bucket_alloc));
    ap_pass_brigade(r->output_filters, bb);
    return OK;
}

/* Passes what is pending to the client; 0 when the client went away (the worker is told). */
static int relay_pass(tsgi_call *k, apr_bucket_brigade *bb, int flush)
{
    request_rec *r = k->r;
    conn_rec *cc = r->connection;
    apr_status_t rv;
    if (flush)
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(cc->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, bb);
    apr_brigade_cleanup(bb);
    if (rv == APR_SUCCESS && !cc->aborted)
        return 1;
    ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r, "mod_tsgi: request %s: client went away", k->id);
    tsgi_conn_abort(k->c, TSGI_ABORT_CLIENT_GONE);
    k->c = NULL;
    return 0;
}

/* The response after its head: BODY* END, streamed to the client. What the
 * worker sends in one go is passed on together, a FLUSH or 64 KiB at once. */
static int relay_body(tsgi_call *k)
{
    request_rec *r = k->r;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_size_t pending = 0;
    for (;;) {
        tsgi_in in;
        apr_status_t rv;
        int perr, flush = 0;
        arm(k);
        rv = tsgi_read_frame(k->c, r->pool, k->deadline, &in, &perr);
        if (rv == APR_SUCCESS) {
            switch (in.f.type) {
            case TSGI_BODY:
                rv = relay_chunk(k, &in.f, bb, &pending, &flush);
                break;
            case TSGI_END:
                if (!length_mismatch(k))
                    return relay_end(k, bb);
                rv = APR_EGENERAL;
                break;
            case TSGI_GOAWAY:
                k->c->goaway = 1;
                continue;
            default:
                rv = APR_EGENERAL;
            }
        }
        if (rv == TSGI_IO_CLIENT_GONE) {
            apr_brigade_cleanup(bb);
            client_gone(k);
            return OK;
        }
        if (rv != APR_SUCCESS)
            return relay_cut(k, bb, rv);
        if (flush || pending >= TSGI_READ_BUF || (k->c->start == k->c->end && pending)) {
            pending = 0;
            if (!relay_pass(k, bb, flush))
                return OK;
        }
    }
}

static int has_lower(const char *s)
{
    for (; *s; s++)
        if (*s >= 'a' && *s <= 'z')
            return 1;
    return 0;
}

/* The request body to forward (content phase only): chunked (length
 * unknown) or by Content-Length. OK or an HTTP status (400, 413). */
static int request_body(tsgi_call *k, int *with_body, apr_uint64_t *clen)
{
    request_rec *r = k->r;
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_off_t n;
    char *end;
    *with_body = 0;
    *clen = 0;
    if (k->phase != TSGI_PHASE_FULL)
        return OK;
    if (apr_table_get(r->headers_in, "Transfer-Encoding")) {
        *with_body = 1;
        *clen = TSGI_UNKNOWN_LENGTH;
        return OK;
    }
    if (!cl)
        return OK;
    if (apr_strtoff(&n, cl, &end, 10) != APR_SUCCESS || *end || n < 0)
        return HTTP_BAD_REQUEST;
    if (k->d->max_body && n > k->d->max_body) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: Content-Length %" APR_OFF_T_FMT
                      " exceeds max-body", k->id, n);
        return HTTP_REQUEST_ENTITY_TOO_LARGE;
    }
    *with_body = n > 0;
    *clen = (apr_uint64_t)n;
    return OK;
}

typedef enum { SENT, SEND_AGAIN, SEND_FAILED } tsgi_sent;

/* Connects (or reuses a pooled connection) and sends REQUEST and the body.
 * SEND_AGAIN: a pooled connection the worker had just closed, nothing sent;
 * SEND_FAILED: *status says what to answer. */
static tsgi_sent send_request(tsgi_call *k, int flags, apr_uint64_t clen, int with_body, int may_retry,
                              int *status)
{
    apr_status_t rv = tsgi_conn_acquire(k->d, k->r, &k->c);
    int st;
    if (rv != APR_SUCCESS) {
        *status = fail(k, HTTP_SERVICE_UNAVAILABLE, rv,
                       rv == TSGI_IO_TIMEOUT ? "no worker accepted within connect-timeout" : "cannot reach a worker");
        return SEND_FAILED;
    }
    arm(k);
    if ((rv = send_head(k, flags, clen)) != APR_SUCCESS) {
        int was_used = k->c->used;
        tsgi_conn_close(k->c);
        k->c = NULL;
        if (was_used && may_retry && rv != APR_ENOSPC)
            return SEND_AGAIN;
        *status = fail(k, rv == APR_ENOSPC ? HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE : HTTP_BAD_GATEWAY, rv,
                       "cannot send the request");
        return SEND_FAILED;
    }
    if (!with_body || (st = send_body(k, &rv)) == OK)
        return SENT;
    tsgi_conn_abort(k->c, st == HTTP_REQUEST_ENTITY_TOO_LARGE ? TSGI_ABORT_TOO_LARGE
                          : rv != APR_SUCCESS ? TSGI_ABORT_ERROR : TSGI_ABORT_CLIENT_GONE);
    k->c = NULL;
    *status = st == HTTP_BAD_GATEWAY ? fail(k, st, rv, "worker went away while receiving the body") : st;
    return SEND_FAILED;
}

/* No reply came: request-timeout (504), or the worker went away (502).
 * *again when a draining worker (GOAWAY) closed without reading the
 * request: it never ran, so it may be sent once more. */
static tsgi_outcome reply_failed(tsgi_call *k, apr_status_t rv, int perr, int may_retry, int *again, int *status)
{
    int was_goaway = k->c->goaway;
    if (rv == TSGI_IO_TIMEOUT) {
        tsgi_conn_abort(k->c, TSGI_ABORT_TIMEOUT);
        k->c = NULL;
        *status = fail(k, HTTP_GATEWAY_TIME_OUT, rv, "request-timeout");
        return TSGI_OUT_STATUS;
    }
    tsgi_conn_close(k->c);
    k->c = NULL;
    /* A worker closing with our request unread gives ECONNRESET on a Unix
     * socket rather than EOF: both mean the peer is gone. */
    if (rv == ECONNRESET || rv == EPIPE)
        rv = TSGI_IO_EOF;
    if (rv == TSGI_IO_EOF && was_goaway && may_retry) {
        *again = 1;
        return TSGI_OUT_STATUS;
    }
    *status = fail(k, HTTP_BAD_GATEWAY, rv,
                   perr ? apr_pstrcat(k->r->pool, "protocol error: ", tsgi_strerror(perr), NULL)
                   : rv == TSGI_IO_EOF ? "worker closed the connection (crashed?)" : "I/O error");
    return TSGI_OUT_STATUS;
}

/* The worker's reply frame: a response (relayed now), a DECISION, or an ERROR. */
static tsgi_outcome reply_frame(tsgi_call *k, tsgi_in *in, int *status, const char **user)
{
    request_rec *r = k->r;
    switch (in->f.type) {
    case TSGI_RESPONSE_HEAD:
        if (!apply_head(k, &in->m.u.response)) {
            tsgi_conn_abort(k->c, TSGI_ABORT_ERROR);
            *status = HTTP_BAD_GATEWAY;
            return TSGI_OUT_STATUS;
        }
        relay_body(k);
        *status = OK;
        return TSGI_OUT_RESPONSE;
    case TSGI_TUNNEL:
        if (!k->upgrade)
            break;
        /* The worker accepted the upgrade: its 101 head and the socket's bytes follow raw. */
        tsgi_tunnel_run(r, k->d, k->c, k->id);
        k->c = NULL;
        *status = OK;
        return TSGI_OUT_RESPONSE;
    case TSGI_DECISION:
        if (k->phase != TSGI_PHASE_AUTHN && k->phase != TSGI_PHASE_AUTHZ)
            break;
        if (in->m.u.decision.kind == 1)
            *user = apr_pstrmemdup(r->pool, in->m.u.decision.user.p, in->m.u.decision.user.len);
        tsgi_conn_release(k->d, k->c, 1);
        return TSGI_OUT_DECISION;
    case TSGI_ERROR: {
        int st = in->m.u.error.status;
        if (st < 400 || st > 599)
            st = HTTP_BAD_GATEWAY;
        if (in->m.u.error.retry_after)
            apr_table_setn(r->err_headers_out, "Retry-After", apr_psprintf(r->pool, "%u", in->m.u.error.retry_after));
        tsgi_conn_release(k->d, k->c, 1);
        k->c = NULL;
        *status = fail(k, st, 0, apr_psprintf(r->pool, "worker refused the request: %.*s",
                                              (int)in->m.u.error.message.len, in->m.u.error.message.p));
        return TSGI_OUT_STATUS;
    }
    default:
        break;
    }
    tsgi_conn_abort(k->c, TSGI_ABORT_ERROR);
    *status = fail(k, HTTP_BAD_GATEWAY, 0, apr_psprintf(r->pool, "unexpected frame type 0x%02x from worker", in->f.type));
    return TSGI_OUT_STATUS;
}

/* Waits for the worker's reply, watching the client for a hang-up. */
static tsgi_outcome read_reply(tsgi_call *k, int may_retry, int *again, int *status, const char **user)
{
    k->c->client_fd = client_socket_fd(k->r);
    for (;;) {
        tsgi_in in;
        int perr;
        apr_status_t rv = tsgi_read_frame(k->c, k->r->pool, k->deadline, &in, &perr);
        if (rv == APR_SUCCESS && in.f.type == TSGI_GOAWAY) {
            k->c->goaway = 1;
            continue;
        }
        if (rv == TSGI_IO_CLIENT_GONE) {
            *status = client_gone(k);
            return TSGI_OUT_STATUS;
        }
        if (rv != APR_SUCCESS)
            return reply_failed(k, rv, perr, may_retry, again, status);
        return reply_frame(k, &in, status, user);
    }
}

/*
 * One exchange: connect (or reuse), REQUEST [BODY* END], then the reply.
 * TSGI_OUT_RESPONSE: the head is applied to r and the body has been relayed;
 * TSGI_OUT_DECISION: *user set (NULL = no opinion), or a LOG request sent;
 * TSGI_OUT_STATUS: *status is the error to return. A request that cannot
 * have run (the pooled connection was dead, or GOAWAY then EOF) is sent once more.
 */
static tsgi_outcome exchange(request_rec *r, tsgi_daemon *d, int phase, int flags, int *status, const char **user)
{
    tsgi_call k;
    apr_uint64_t clen;
    int with_body, attempt, st;
    memset(&k, 0, sizeof(k));
    k.r = r;
    k.d = d;
    k.id = request_id(r);
    k.phase = phase;
    k.declared = -1;
    *user = NULL;
    if (phase != TSGI_PHASE_LOG && has_lower(r->method)) {
        /* Methods are case-sensitive (RFC 9110 9.1); Node and nginx refuse these while parsing. */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "mod_tsgi: request %s: method '%s' has lower-case letters (400)",
                      k.id, r->method);
        *status = HTTP_BAD_REQUEST;
        return TSGI_OUT_STATUS;
    }
    if ((st = request_body(&k, &with_body, &clen)) != OK) {
        *status = st;
        return TSGI_OUT_STATUS;
    }
    if (with_body)
        flags |= TSGI_RF_HAS_BODY;
    if (phase == TSGI_PHASE_FULL && tsgi_tunnel_possible(r)) {
        flags |= TSGI_RF_UPGRADE;
        k.upgrade = 1;
    }
    for (attempt = 0;; attempt++) {
        int again = 0;
        tsgi_outcome out;
        switch (send_request(&k, flags, clen, with_body, attempt == 0, status)) {
        case SEND_AGAIN:
            continue;
        case SEND_FAILED:
            return TSGI_OUT_STATUS;
        case SENT:
            break;
        }
        if (phase == TSGI_PHASE_LOG) {
            tsgi_conn_release(d, k.c, 1);
            return TSGI_OUT_DECISION;
        }
        out = read_reply(&k, attempt == 0 && !with_body, &again, status, user);
        if (!again)
            return out;
    }
}

/*
 * While a thread waits for its worker it runs as SCHED_BATCH: a batch
 * thread woken by the worker's reply does not preempt the worker, so the
 * worker answers everything it has read before the waiting threads run (one
 * context switch per reply instead of two). Only the exchange is affected:
 * the thread's policy is restored before it serves anything else.
 */
/* The calling thread's policy outside exchanges, asked once per thread (-1:
 * not yet): mod_tsgi is what switches it, and it always switches it back. */
static __thread int thread_policy = -1;

static int batch_enter(tsgi_daemon *d)
{
    struct sched_param sp = { 0 };
    if (d->cpool->batch)
        return 0;
    if (thread_policy < 0)
        thread_policy = sched_getscheduler(0);
    return thread_policy == SCHED_OTHER && sched_setscheduler(0, SCHED_BATCH, &sp) == 0;
}

static void batch_leave(int entered)
{
    struct sched_param sp = { 0 };
    if (entered)
        sched_setscheduler(0, SCHED_OTHER, &sp);
}

/* One exchange with a worker of d for request r (see exchange()); a LOG
 * request waits for no reply, so it runs without the SCHED_BATCH switch. */
tsgi_outcome tsgi_exchange(request_rec *r, tsgi_daemon *d, int phase, int flags, int *status, const char **user)
{
    int entered = phase != TSGI_PHASE_LOG && batch_enter(d);
    tsgi_outcome out = exchange(r, d, phase, flags, status, user);
    batch_leave(entered);
    return out;
}
