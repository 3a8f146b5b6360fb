/*
 * mod_tsgi WebSocket tunnel, in an Apache child (PROTOCOL.md, "WebSocket
 * tunnel"): once the worker answered an upgrade with TUNNEL, this thread
 * relays between the client connection and the worker connection until
 * either ends: the worker's bytes raw to the client, the client's as BODY
 * frames (END at its FIN, GOAWAY when this child is stopping, ABORT when the
 * client is gone). Client bytes come through the connection's input filters
 * and go out through its output filters (so TLS works), one bounded chunk at
 * a time (64 KiB), each flushed; the two are polled together with an
 * apr_pollset, as httpd's proxy tunnel does. The thread is held for the
 * socket's life (no async).
 */
#include "mod_tsgi.h"

#include "http_connection.h"
#include "http_core.h"
#include "http_protocol.h"
#include "ap_mpm.h"
#include "util_filter.h"

#include "apr_poll.h"
#include "apr_portable.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    request_rec *r;
    conn_rec *c;
    tsgi_conn *w;
    const char *id;
    apr_pollset_t *ps;
    apr_pollfd_t client, worker;
    apr_bucket_brigade *bb;
    int client_eof;          /* the client sent FIN: passed on as END */
    int told_stop;           /* GOAWAY sent: this child is stopping */
    apr_interval_time_t write_timeout;
    const char *why;         /* how the tunnel ended, for the log */
    int abort;               /* it ended on the client's side: the worker gets ABORT */
} tsgi_tunnel;

/* Relaying goes on; the tunnel ends with anything else (t->why says why). */
#define GO_ON 0
#define ENDED 1

/* The tunnel ends on the client's side (gone, failed, idle): the worker's socket closes with 1006 at once. */
static int client_side_end(tsgi_tunnel *t, const char *why)
{
    t->why = why;
    t->abort = 1;
    return ENDED;
}

/* Whether r is a WebSocket upgrade this module can tunnel: HTTP/1.1 on a
 * connection of its own (an HTTP/2 stream has no socket to hand over). */
int tsgi_tunnel_possible(request_rec *r)
{
    const char *up = apr_table_get(r->headers_in, "Upgrade");
    const char *conn = apr_table_get(r->headers_in, "Connection");
    return !r->connection->master && !r->main && r->proto_num == HTTP_VERSION(1, 1) && up && conn &&
           ap_find_token(r->pool, up, "websocket") && ap_find_token(r->pool, conn, "upgrade") &&
           ap_get_conn_socket(r->connection);
}

/* Bytes to the client through its output filters, flushed at once. */
static int to_client(tsgi_tunnel *t, const char *p, apr_size_t n)
{
    apr_bucket_alloc_t *ba = t->c->bucket_alloc;
    apr_status_t rv;
    APR_BRIGADE_INSERT_TAIL(t->bb, apr_bucket_transient_create(p, n, ba));
    APR_BRIGADE_INSERT_TAIL(t->bb, apr_bucket_flush_create(ba));
    rv = ap_pass_brigade(t->c->output_filters, t->bb);
    apr_brigade_cleanup(t->bb);
    if (rv != APR_SUCCESS || t->c->aborted)
        return client_side_end(t, "the client went away");
    t->r->bytes_sent += n;
    return GO_ON;
}

/* What the worker has buffered (read past TUNNEL with its frame header) goes first. */
static int worker_leftover(tsgi_tunnel *t)
{
    tsgi_conn *w = t->w;
    size_t n = w->end - w->start;
    const char *p = (const char *)w->buf + w->start;
    w->start = w->end = 0;
    return n ? to_client(t, p, n) : GO_ON;
}

/* The worker is readable: one chunk (at most its 64 KiB buffer) to the client. */
static int from_worker(tsgi_tunnel *t)
{
    tsgi_conn *w = t->w;
    ssize_t n;
    do
        n = read(w->fd, w->buf, sizeof(w->buf));
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return GO_ON;
    if (n <= 0) {
        /* The worker ended the socket (close handshake, 1001 at a stop, a crash). */
        t->why = n == 0 ? "the worker closed the socket" : "the worker connection failed";
        return ENDED;
    }
    return to_client(t, (const char *)w->buf, (apr_size_t)n);
}

/* A frame without payload (END, GOAWAY) to the worker. */
static apr_status_t tell_worker(tsgi_tunnel *t, int type)
{
    unsigned char f[TSGI_HDR_LEN];
    tsgi_encode_empty(f, (uint8_t)type);
    return tsgi_conn_write(t->w, f, sizeof(f), apr_time_now() + t->write_timeout);
}

/* The client sent FIN: the worker gets END and ends its side (ws does), which ends the tunnel. */
static apr_status_t client_ended(tsgi_tunnel *t)
{
    t->client_eof = 1;
    apr_pollset_remove(t->ps, &t->client);
    return tell_worker(t, TSGI_END);
}

/* Client bytes to the worker as BODY frames. */
static apr_status_t body_to_worker(tsgi_tunnel *t, const char *data, apr_size_t len)
{
    while (len) {
        apr_size_t n = len < TSGI_MAX_FRAME ? len : TSGI_MAX_FRAME;
        unsigned char hdr[TSGI_HDR_LEN];
        struct iovec iov[2];
        apr_status_t rv;
        tsgi_encode_body_header(hdr, n, 0);
        iov[0].iov_base = hdr;
        iov[0].iov_len = TSGI_HDR_LEN;
        iov[1].iov_base = (void *)data;
        iov[1].iov_len = n;
        if ((rv = tsgi_conn_writev(t->w, iov, 2, apr_time_now() + t->write_timeout)) != APR_SUCCESS)
            return rv;
        data += n;
        len -= n;
    }
    return APR_SUCCESS;
}

/* The data buckets of bb to the worker; APR_EOF when bb ends the client's input. */
static apr_status_t pass_to_worker(tsgi_tunnel *t)
{
    apr_bucket *b;
    for (b = APR_BRIGADE_FIRST(t->bb); b != APR_BRIGADE_SENTINEL(t->bb); b = APR_BUCKET_NEXT(b)) {
        const char *data;
        apr_size_t len;
        apr_status_t rv;
        if (APR_BUCKET_IS_EOS(b))
            return APR_EOF;
        if (APR_BUCKET_IS_METADATA(b))
            continue;
        if ((rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ)) != APR_SUCCESS)
            return rv;
        if (len && (rv = body_to_worker(t, data, len)) != APR_SUCCESS)
            return rv == TSGI_IO_TIMEOUT ? rv : APR_EPIPE;
    }
    return APR_SUCCESS;
}

/* The client is readable (or its filters hold data): everything available, to the worker. */
static int from_client(tsgi_tunnel *t)
{
    for (;;) {
        apr_status_t rv = ap_get_brigade(t->c->input_filters, t->bb, AP_MODE_READBYTES, APR_NONBLOCK_READ,
                                         TSGI_READ_BUF);
        /* Nothing available: a non-blocking read gives an empty brigade (or EAGAIN). */
        if (rv == APR_SUCCESS && APR_BRIGADE_EMPTY(t->bb))
            return GO_ON;
        if (rv == APR_SUCCESS)
            rv = pass_to_worker(t);
        apr_brigade_cleanup(t->bb);
        if (APR_STATUS_IS_EAGAIN(rv))
            return GO_ON;
        if (APR_STATUS_IS_EOF(rv) && (rv = client_ended(t)) == APR_SUCCESS)
            return GO_ON;
        if (rv == APR_EPIPE || rv == TSGI_IO_TIMEOUT) {
            t->why = rv == APR_EPIPE ? "the worker connection failed" : "the worker did not read within Timeout";
            return ENDED;
        }
        if (rv != APR_SUCCESS)
            return client_side_end(t, "the client connection failed");
    }
}

static apr_status_t tunnel_setup(tsgi_tunnel *t)
{
    apr_socket_t *ws = NULL;
    apr_os_sock_t fd = t->w->fd;
    apr_status_t rv;
    if ((rv = apr_pollset_create(&t->ps, 2, t->r->pool, 0)) != APR_SUCCESS ||
        (rv = apr_os_sock_put(&ws, &fd, t->r->pool)) != APR_SUCCESS)
        return rv;
    t->client.p = t->worker.p = t->r->pool;
    t->client.desc_type = t->worker.desc_type = APR_POLL_SOCKET;
    t->client.reqevents = t->worker.reqevents = APR_POLLIN;
    t->client.desc.s = ap_get_conn_socket(t->c);
    t->worker.desc.s = ws;
    t->client.client_data = &t->client;
    t->worker.client_data = &t->worker;
    if ((rv = apr_pollset_add(t->ps, &t->client)) != APR_SUCCESS)
        return rv;
    return apr_pollset_add(t->ps, &t->worker);
}

/* How often a quiet tunnel looks at the child's state and its idle time. */
#define TSGI_TUNNEL_TICK apr_time_from_sec(1)

/* Between polls: a stopping child (graceful restart or stop) tells the worker once, which closes
 * the socket with 1001 after its graceful-timeout; a socket quiet for `idle` ends. */
static int tick(tsgi_tunnel *t, apr_time_t last, apr_interval_time_t idle)
{
    int state;
    if (!t->told_stop && ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS && state == AP_MPMQ_STOPPING) {
        t->told_stop = 1;
        if (tell_worker(t, TSGI_GOAWAY) != APR_SUCCESS) {
            t->why = "the worker connection failed";
            return ENDED;
        }
    }
    if (idle > 0 && apr_time_now() - last >= idle)
        return client_side_end(t, "ws-idle-timeout");
    return GO_ON;
}

/* Polls both sides until the tunnel ends; idle: no byte either way for that long (0: no limit). */
static void tunnel_loop(tsgi_tunnel *t, apr_interval_time_t idle)
{
    apr_time_t last = apr_time_now();
    int state = worker_leftover(t);
    /* Bytes the client sent with or right after the request already sit in the filters: no POLLIN for them. */
    if (state == GO_ON)
        state = from_client(t);
    while (state == GO_ON) {
        const apr_pollfd_t *res;
        apr_int32_t n = 0, i;
        apr_status_t rv = apr_pollset_poll(t->ps, TSGI_TUNNEL_TICK, &n, &res);
        if (APR_STATUS_IS_EINTR(rv))
            continue;
        if (rv != APR_SUCCESS && !APR_STATUS_IS_TIMEUP(rv)) {
            client_side_end(t, "polling failed");
            return;
        }
        if (n)
            last = apr_time_now();
        for (i = 0; i < n && state == GO_ON; i++) {
            if (res[i].client_data == &t->worker)
                state = from_worker(t);
            else if (!t->client_eof)
                state = from_client(t);
        }
        if (state == GO_ON)
            state = tick(t, last, idle);
    }
}

/*
 * Runs the tunnel for r over the worker connection w (TUNNEL just read) and
 * closes w. The client connection is not kept alive afterwards; Apache logs
 * 101 with the bytes relayed to the client.
 */
void tsgi_tunnel_run(request_rec *r, tsgi_daemon *d, tsgi_conn *w, const char *id)
{
    conn_rec *c = r->connection;
    tsgi_tunnel t;
    apr_status_t rv;
    memset(&t, 0, sizeof(t));
    t.r = r;
    t.c = c;
    t.w = w;
    t.id = id;
    t.bb = apr_brigade_create(r->pool, c->bucket_alloc);
    t.write_timeout = r->server->timeout;
    w->client_fd = -1;
    r->status = HTTP_SWITCHING_PROTOCOLS;
    r->bytes_sent = 0;
    /* Only connection filters from here (no HTTP framing, no request timeout on a long-lived socket), and the
     * end of the request sends nothing more (ap_finalize_request_protocol's EOS goes to them). */
    ap_remove_input_filter_byhandle(c->input_filters, "reqtimeout");
    r->input_filters = r->proto_input_filters = c->input_filters;
    r->output_filters = r->proto_output_filters = c->output_filters;
    c->keepalive = AP_CONN_CLOSE;
    if ((rv = tunnel_setup(&t)) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, "mod_tsgi: request %s: cannot set up the WebSocket tunnel", id);
        tsgi_conn_close(w);
        return;
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "mod_tsgi: request %s: WebSocket tunnel to daemon %s open", id,
                  d->name);
    tunnel_loop(&t, d->ws_idle_timeout);
    apr_pollset_destroy(t.ps);
    if (t.abort)
        tsgi_conn_abort(w, TSGI_ABORT_CLIENT_GONE);
    else
        tsgi_conn_close(w);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "mod_tsgi: request %s: WebSocket tunnel closed: %s (%" APR_OFF_T_FMT
                  " bytes to the client)", id, t.why ? t.why : "done", r->bytes_sent);
}
