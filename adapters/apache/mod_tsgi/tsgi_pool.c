/*
 * mod_tsgi connection pool, in an Apache child: connections to a daemon's
 * workers (connect, HELLO with the secret, WELCOME), a per-process stack of
 * idle ones reused for sequential exchanges, and the framed I/O on them with a
 * deadline, watching the client socket for a hang-up while it waits.
 */
#include "mod_tsgi.h"

#include "apr_strings.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void tsgi_conn_close(tsgi_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static apr_status_t cpool_cleanup(void *data)
{
    tsgi_cpool *cp = data;
    while (cp->idle) {
        tsgi_conn *c = cp->idle;
        cp->idle = c->next;
        tsgi_conn_close(c);
    }
    return APR_SUCCESS;
}

/* child_init, per daemon: this process's pool of idle connections (closed with pchild). */
void tsgi_pool_child_init(apr_pool_t *pchild, tsgi_daemon *d, int batch)
{
    d->cpool = apr_pcalloc(pchild, sizeof(tsgi_cpool));
    d->cpool->batch = batch;
    apr_thread_mutex_create(&d->cpool->mutex, APR_THREAD_MUTEX_DEFAULT, pchild);
    apr_pool_cleanup_register(pchild, d->cpool, cpool_cleanup, apr_pool_cleanup_null);
}

/* Milliseconds left until deadline for poll(); -1 = no deadline. */
static int ms_left(apr_time_t deadline)
{
    apr_time_t left;
    if (!deadline)
        return -1;
    left = deadline - apr_time_now();
    if (left <= 0)
        return 0;
    return (int)((left + 999) / 1000);
}

/*
 * Waits for the worker socket. While a request is in progress, also watches
 * the client socket for a hang-up (POLLRDHUP: the client closed; pipelined
 * bytes do not trigger it), so request.signal aborts without waiting for the
 * response to fail on write.
 */
static apr_status_t wait_fd(int fd, short events, apr_time_t deadline, int client_fd)
{
    struct pollfd pfd[2];
    int rc, n = 1;
    pfd[0].fd = fd;
    pfd[0].events = events;
    pfd[0].revents = 0;
    if (client_fd >= 0) {
        pfd[1].fd = client_fd;
        pfd[1].events = POLLRDHUP;
        pfd[1].revents = 0;
        n = 2;
    }
    do {
        rc = poll(pfd, n, ms_left(deadline));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return errno;
    if (rc == 0)
        return TSGI_IO_TIMEOUT;
    if (n == 2 && !pfd[0].revents && (pfd[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return TSGI_IO_CLIENT_GONE;
    return APR_SUCCESS;
}

apr_status_t tsgi_conn_writev(tsgi_conn *c, struct iovec *iov, int n, apr_time_t deadline)
{
    c->sent = 1;
    while (n > 0) {
        struct msghdr msg;
        ssize_t w;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = n > IOV_MAX ? IOV_MAX : n;
        /* MSG_NOSIGNAL: a worker that just died must give EPIPE, not SIGPIPE. */
        w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            apr_status_t rv;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return errno;
            if ((rv = wait_fd(c->fd, POLLOUT, deadline, c->client_fd)) != APR_SUCCESS)
                return rv;
            continue;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= w;
        }
    }
    return APR_SUCCESS;
}

apr_status_t tsgi_conn_write(tsgi_conn *c, const void *p, size_t len, apr_time_t deadline)
{
    struct iovec iov;
    iov.iov_base = (void *)p;
    iov.iov_len = len;
    return tsgi_conn_writev(c, &iov, 1, deadline);
}

/* Reads more bytes into the buffer (which must have room). */
static apr_status_t conn_fill(tsgi_conn *c, apr_time_t deadline)
{
    for (;;) {
        ssize_t r;
        if (c->start == c->end)
            c->start = c->end = 0;
        if (c->sent) {
            /* The reply cannot be there yet: poll first, saving a read. */
            apr_status_t rv = wait_fd(c->fd, POLLIN, deadline, c->client_fd);
            c->sent = 0;
            if (rv != APR_SUCCESS)
                return rv;
        }
        r = read(c->fd, c->buf + c->end, sizeof(c->buf) - c->end);
        if (r > 0) {
            c->end += (size_t)r;
            return APR_SUCCESS;
        }
        if (r == 0)
            return TSGI_IO_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            apr_status_t rv = wait_fd(c->fd, POLLIN, deadline, c->client_fd);
            if (rv != APR_SUCCESS)
                return rv;
            continue;
        }
        return errno;
    }
}

/* Copies exactly n bytes into dst (dst may be NULL to discard). */
apr_status_t tsgi_conn_read(tsgi_conn *c, unsigned char *dst, size_t n, apr_time_t deadline)
{
    while (n > 0) {
        size_t have = c->end - c->start;
        apr_status_t rv;
        if (have) {
            size_t take = have < n ? have : n;
            if (dst) {
                memcpy(dst, c->buf + c->start, take);
                dst += take;
            }
            c->start += take;
            n -= take;
            continue;
        }
        if ((rv = conn_fill(c, deadline)) != APR_SUCCESS)
            return rv;
    }
    return APR_SUCCESS;
}

/* Reads one frame header and, except for BODY, its payload (into pool). */
apr_status_t tsgi_read_frame(tsgi_conn *c, apr_pool_t *p, apr_time_t deadline, tsgi_in *in, int *proto_err)
{
    unsigned char hdr[TSGI_HDR_LEN];
    apr_status_t rv;
    int rc;
    *proto_err = 0;
    if ((rv = tsgi_conn_read(c, hdr, TSGI_HDR_LEN, deadline)) != APR_SUCCESS)
        return rv;
    if ((rc = tsgi_frame_parse(hdr, &in->f)) != TSGI_OK) {
        *proto_err = rc;
        return APR_EGENERAL;
    }
    in->payload = NULL;
    if (in->f.type == TSGI_BODY)
        return APR_SUCCESS;
    in->payload = in->f.len ? apr_palloc(p, in->f.len) : (unsigned char *)"";
    if ((rv = tsgi_conn_read(c, in->payload, in->f.len, deadline)) != APR_SUCCESS)
        return rv;
    if ((rc = tsgi_decode(&in->f, in->payload, &in->m)) != TSGI_OK) {
        *proto_err = rc;
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}

/* An idle pooled connection is reusable unless the worker went away
 * (EOF) or announced GOAWAY while it sat in the pool. */
static int conn_alive(tsgi_conn *c)
{
    struct pollfd pfd;
    pfd.fd = c->fd;
    pfd.events = POLLIN;
    if (c->start != c->end)
        return 0; /* unsolicited bytes: GOAWAY or garbage, both mean stop */
    if (poll(&pfd, 1, 0) == 0)
        return 1;
    return 0;
}

/* A connected non-blocking socket to the daemon, retried until `deadline`. */
static apr_status_t connect_socket(tsgi_daemon *d, apr_time_t deadline, int *out)
{
    struct sockaddr_un sa;
    apr_status_t rv;
    int fd;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    apr_cpystrn(sa.sun_path, d->socket_path, sizeof(sa.sun_path));
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            *out = fd;
            return APR_SUCCESS;
        }
        rv = errno;
        close(fd);
        /* Backlog full (EAGAIN) or listener briefly missing: retry until
         * connect-timeout, like mod_wsgi's connect loop. */
        if (rv != EAGAIN && rv != ECONNREFUSED && rv != ENOENT)
            return rv;
        if (apr_time_now() >= deadline)
            return TSGI_IO_TIMEOUT;
        apr_sleep(apr_time_from_msec(20));
    }
}

/* A new connection to a worker: connected, HELLO sent, WELCOME read. */
static apr_status_t conn_connect(tsgi_daemon *d, request_rec *r, tsgi_conn **out)
{
    apr_time_t deadline = apr_time_now() + d->connect_timeout;
    const unsigned char *secret = tsgi_secret_get(r->server->process);
    unsigned char hello[TSGI_HDR_LEN + 6 + TSGI_SECRET_LEN];
    tsgi_conn *c;
    tsgi_in in;
    apr_status_t rv;
    int perr, fd = -1;
    if ((rv = connect_socket(d, deadline, &fd)) != APR_SUCCESS)
        return rv;
    c = malloc(sizeof(*c));
    if (!c) {
        close(fd);
        return APR_ENOMEM;
    }
    c->fd = fd;
    c->goaway = c->used = c->sent = 0;
    c->client_fd = -1;
    c->start = c->end = 0;
    c->next = NULL;
    tsgi_encode_hello(hello, (uint32_t)getpid(), secret, TSGI_SECRET_LEN);
    rv = tsgi_conn_write(c, hello, sizeof(hello), deadline);
    /* WELCOME proves a worker accepted; the backlog alone does not. */
    if (rv == APR_SUCCESS)
        rv = tsgi_read_frame(c, r->pool, deadline, &in, &perr);
    if (rv == APR_SUCCESS && in.f.type != TSGI_WELCOME)
        rv = APR_EGENERAL;
    if (rv != APR_SUCCESS) {
        tsgi_conn_close(c);
        return rv;
    }
    *out = c;
    return APR_SUCCESS;
}

apr_status_t tsgi_conn_acquire(tsgi_daemon *d, request_rec *r, tsgi_conn **out)
{
    tsgi_cpool *cp = d->cpool;
    for (;;) {
        tsgi_conn *c;
        apr_thread_mutex_lock(cp->mutex);
        c = cp->idle;
        if (c)
            cp->idle = c->next;
        apr_thread_mutex_unlock(cp->mutex);
        if (!c)
            return conn_connect(d, r, out);
        if (conn_alive(c)) {
            *out = c;
            return APR_SUCCESS;
        }
        tsgi_conn_close(c);
    }
}

void tsgi_conn_release(tsgi_daemon *d, tsgi_conn *c, int reusable)
{
    if (!reusable || c->goaway) {
        tsgi_conn_close(c);
        return;
    }
    c->used = 1;
    c->client_fd = -1;
    apr_thread_mutex_lock(d->cpool->mutex);
    c->next = d->cpool->idle;
    d->cpool->idle = c;
    apr_thread_mutex_unlock(d->cpool->mutex);
}

/* Tells the worker to abort request.signal, then drops the connection. */
/* How long ABORT may wait for room on a worker socket that request body bytes
 * still fill: the worker reads them quickly and then learns why it ended. */
#define TSGI_ABORT_WAIT_MS 100

void tsgi_conn_abort(tsgi_conn *c, int reason)
{
    unsigned char buf[TSGI_HDR_LEN + 1];
    struct pollfd p;
    tsgi_encode_abort(buf, (uint8_t)reason);
    p.fd = c->fd;
    p.events = POLLOUT;
    p.revents = 0;
    if (send(c->fd, buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EAGAIN && poll(&p, 1, TSGI_ABORT_WAIT_MS) > 0)
        (void)!send(c->fd, buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT);
    tsgi_conn_close(c);
}
