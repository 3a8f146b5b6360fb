/* tsgi wire protocol v1 codec (see tsgi_proto.h and ../PROTOCOL.md). */
#include "tsgi_proto.h"

#include <string.h>

/* ------------------------------------------------------------ primitives */

static void put16(unsigned char *b, uint16_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *b, uint32_t v)
{
    put16(b, (uint16_t)v);
    put16(b + 2, (uint16_t)(v >> 16));
}

static void put64(unsigned char *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b + 4, (uint32_t)(v >> 32));
}

static uint16_t get16(const unsigned char *b)
{
    return (uint16_t)(b[0] | (b[1] << 8));
}

static uint32_t get32(const unsigned char *b)
{
    return (uint32_t)get16(b) | ((uint32_t)get16(b + 2) << 16);
}

static uint64_t get64(const unsigned char *b)
{
    return (uint64_t)get32(b) | ((uint64_t)get32(b + 4) << 32);
}

/* Bounded reader over one payload; any overrun latches an error. */
typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    int err;
} rd;

static int need(rd *r, size_t n)
{
    if (r->err)
        return 0;
    if ((size_t)(r->end - r->p) < n) {
        r->err = TSGI_ETRUNC;
        return 0;
    }
    return 1;
}

static uint8_t rd8(rd *r)
{
    return need(r, 1) ? *r->p++ : 0;
}

static uint16_t rd16(rd *r)
{
    uint16_t v = 0;
    if (need(r, 2)) {
        v = get16(r->p);
        r->p += 2;
    }
    return v;
}

static uint32_t rd32(rd *r)
{
    uint32_t v = 0;
    if (need(r, 4)) {
        v = get32(r->p);
        r->p += 4;
    }
    return v;
}

/* u64 that TypeScript can represent: < 2^53, or all-ones when allowed. */
static uint64_t rd64(rd *r, int allow_unknown)
{
    uint64_t v = 0;
    if (need(r, 8)) {
        v = get64(r->p);
        r->p += 8;
        if (v > TSGI_MAX_SAFE_U64 && !(allow_unknown && v == TSGI_UNKNOWN_LENGTH) && !r->err)
            r->err = TSGI_EVALUE;
    }
    return v;
}

static void rdstr(rd *r, tsgi_str *s, size_t len)
{
    s->p = "";
    s->len = 0;
    if (need(r, len)) {
        s->p = (const char *)r->p;
        s->len = len;
        r->p += len;
    }
}

static void rdstr16(rd *r, tsgi_str *s)
{
    size_t n = rd16(r);
    rdstr(r, s, n);
}

static void rdstr32(rd *r, tsgi_str *s)
{
    size_t n = rd32(r);
    rdstr(r, s, n);
}

static void rdheaders(rd *r, tsgi_hblock *b, uint16_t count)
{
    const unsigned char *start = r->p;
    tsgi_str skip;
    uint16_t i;
    for (i = 0; i < count && !r->err; i++) {
        rdstr16(r, &skip);
        rdstr32(r, &skip);
    }
    b->p = start;
    b->len = (size_t)(r->p - start);
    b->count = count;
}

/* ------------------------------------------------------------ frames */

int tsgi_frame_parse(const unsigned char *buf, tsgi_frame *f)
{
    if (buf[0] != TSGI_VERSION)
        return TSGI_EVERSION;
    if (buf[3] != 0)
        return TSGI_EFLAGS;
    f->type = buf[1];
    f->flags = buf[2];
    f->len = get32(buf + 4);
    if (f->len > TSGI_MAX_FRAME)
        return TSGI_ETOOBIG;
    return TSGI_OK;
}

void tsgi_frame_write(unsigned char *buf, uint8_t type, uint8_t flags, uint32_t len)
{
    buf[0] = TSGI_VERSION;
    buf[1] = type;
    buf[2] = flags;
    buf[3] = 0;
    put32(buf + 4, len);
}

const char *tsgi_strerror(int rc)
{
    switch (rc) {
    case TSGI_OK: return "ok";
    case TSGI_EVERSION: return "unsupported protocol version";
    case TSGI_ETYPE: return "unknown frame type";
    case TSGI_ETOOBIG: return "frame too large";
    case TSGI_ETRUNC: return "truncated payload";
    case TSGI_ETRAIL: return "trailing bytes in payload";
    case TSGI_EVALUE: return "invalid field value";
    case TSGI_EFLAGS: return "invalid flags";
    default: return "unknown error";
    }
}

void tsgi_headers_begin(const tsgi_hblock *b, tsgi_hiter *it)
{
    it->p = b->p;
    it->end = b->p + b->len;
}

int tsgi_headers_next(tsgi_hiter *it, tsgi_header *h)
{
    rd r = { it->p, it->end, 0 };
    if (it->p >= it->end)
        return 0;
    rdstr16(&r, &h->name);
    rdstr32(&r, &h->value);
    if (r.err)
        return 0; /* cannot happen on a block tsgi_decode validated */
    it->p = r.p;
    return 1;
}

/* ------------------------------------------------------------ decoding */

static void decode_request(rd *r, tsgi_request *q)
{
    uint16_t count;
    memset(q, 0, sizeof(*q));
    q->phase = rd8(r);
    q->flags = rd8(r);
    q->client_port = rd16(r);
    q->server_port = rd16(r);
    count = rd16(r);
    q->content_length = rd64(r, 1);
    q->start_us = rd64(r, 0);
    rdstr16(r, &q->method);
    rdstr32(r, &q->uri);
    rdstr16(r, &q->protocol);
    rdstr16(r, &q->scheme);
    rdstr16(r, &q->host);
    rdstr16(r, &q->client_ip);
    rdstr16(r, &q->server_ip);
    rdstr16(r, &q->user);
    rdstr16(r, &q->id);
    rdstr16(r, &q->base_path);
    rdheaders(r, &q->hblock, count);
    q->nheaders = count;
    if (!r->err && q->phase > TSGI_PHASE_LOG)
        r->err = TSGI_EVALUE;
    if (!r->err && (q->flags & ~TSGI_RF_ALL))
        r->err = TSGI_EFLAGS;
    if (q->phase == TSGI_PHASE_LOG) {
        q->log_status = rd16(r);
        q->log_bytes = rd64(r, 0);
        q->log_duration_us = rd64(r, 0);
    }
}

int tsgi_decode(const tsgi_frame *f, const unsigned char *payload, tsgi_msg *m)
{
    rd r = { payload, payload + f->len, 0 };
    memset(m, 0, sizeof(*m));
    m->type = f->type;
    m->flags = f->flags;
    if (f->len > TSGI_MAX_FRAME)
        return TSGI_ETOOBIG;
    if (f->type == TSGI_BODY) {
        if (f->flags & ~TSGI_BODY_FLUSH)
            return TSGI_EFLAGS;
        m->u.body.p = (const char *)payload;
        m->u.body.len = f->len;
        return TSGI_OK;
    }
    if (f->flags != 0)
        return TSGI_EFLAGS;
    switch (f->type) {
    case TSGI_END:
    case TSGI_GOAWAY:
    case TSGI_TUNNEL:
        break;
    case TSGI_HELLO:
        m->u.hello.pid = rd32(&r);
        rdstr16(&r, &m->u.hello.secret);
        break;
    case TSGI_ABORT:
        m->u.abort.reason = rd8(&r);
        break;
    case TSGI_WELCOME:
        m->u.welcome.pid = rd32(&r);
        break;
    case TSGI_RESPONSE_HEAD: {
        uint16_t count;
        m->u.response.status = rd16(&r);
        rdstr16(&r, &m->u.response.reason);
        count = rd16(&r);
        rdheaders(&r, &m->u.response.hblock, count);
        m->u.response.nheaders = count;
        break;
    }
    case TSGI_DECISION:
        m->u.decision.kind = rd8(&r);
        rdstr16(&r, &m->u.decision.user);
        if (!r.err && (m->u.decision.kind > 1 || (m->u.decision.kind == 0 && m->u.decision.user.len)))
            r.err = TSGI_EVALUE;
        break;
    case TSGI_ERROR:
        m->u.error.status = rd16(&r);
        m->u.error.retry_after = rd16(&r);
        rdstr16(&r, &m->u.error.message);
        break;
    case TSGI_REQUEST:
        decode_request(&r, &m->u.request);
        break;
    default:
        return TSGI_ETYPE;
    }
    if (r.err)
        return r.err;
    if (r.p != r.end)
        return TSGI_ETRAIL;
    return TSGI_OK;
}

/* ------------------------------------------------------------ encoding */

/* Writer that trusts a size computed beforehand. */
typedef struct {
    unsigned char *p;
} wr;

static void w8(wr *w, uint8_t v) { *w->p++ = v; }
static void w16(wr *w, uint16_t v) { put16(w->p, v); w->p += 2; }
static void w32(wr *w, uint32_t v) { put32(w->p, v); w->p += 4; }
static void w64(wr *w, uint64_t v) { put64(w->p, v); w->p += 8; }

static void wraw(wr *w, const void *p, size_t n)
{
    if (n)
        memcpy(w->p, p, n);
    w->p += n;
}

static void wstr16(wr *w, const tsgi_str *s) { w16(w, (uint16_t)s->len); wraw(w, s->p, s->len); }
static void wstr32(wr *w, const tsgi_str *s) { w32(w, (uint32_t)s->len); wraw(w, s->p, s->len); }

/* Adds a str16 to a running size; flags overflow. */
static size_t s16(const tsgi_str *s, int *bad)
{
    if (s->len > 0xffff)
        *bad = 1;
    return 2 + s->len;
}

static size_t s32(const tsgi_str *s, int *bad)
{
    if (s->len > TSGI_MAX_FRAME)
        *bad = 1;
    return 4 + s->len;
}

static size_t headers_size(const tsgi_header *h, uint16_t n, const tsgi_hblock *b, int *bad)
{
    size_t total = 0;
    uint16_t i;
    if (!h)
        return b->len; /* re-encoding a decoded block */
    for (i = 0; i < n; i++)
        total += s16(&h[i].name, bad) + s32(&h[i].value, bad);
    return total;
}

static void wheaders(wr *w, const tsgi_header *h, uint16_t n, const tsgi_hblock *b)
{
    uint16_t i;
    if (!h) {
        wraw(w, b->p, b->len);
        return;
    }
    for (i = 0; i < n; i++) {
        wstr16(w, &h[i].name);
        wstr32(w, &h[i].value);
    }
}

static size_t frame_size(size_t payload, int bad)
{
    return (bad || payload > TSGI_MAX_FRAME) ? 0 : TSGI_HDR_LEN + payload;
}

static size_t request_payload(const tsgi_request *r, int *bad)
{
    size_t n = 1 + 1 + 2 + 2 + 2 + 8 + 8;
    n += s16(&r->method, bad) + s32(&r->uri, bad) + s16(&r->protocol, bad) + s16(&r->scheme, bad);
    n += s16(&r->host, bad) + s16(&r->client_ip, bad) + s16(&r->server_ip, bad);
    n += s16(&r->user, bad) + s16(&r->id, bad) + s16(&r->base_path, bad);
    n += headers_size(r->headers, r->nheaders, &r->hblock, bad);
    if (r->phase == TSGI_PHASE_LOG)
        n += 2 + 8 + 8;
    return n;
}

size_t tsgi_request_size(const tsgi_request *r)
{
    int bad = 0;
    size_t n = request_payload(r, &bad);
    return frame_size(n, bad);
}

size_t tsgi_encode_request(unsigned char *out, const tsgi_request *r)
{
    size_t total = tsgi_request_size(r);
    wr w = { out + TSGI_HDR_LEN };
    if (!total)
        return 0;
    tsgi_frame_write(out, TSGI_REQUEST, 0, (uint32_t)(total - TSGI_HDR_LEN));
    w8(&w, r->phase);
    w8(&w, r->flags);
    w16(&w, r->client_port);
    w16(&w, r->server_port);
    w16(&w, r->nheaders);
    w64(&w, r->content_length);
    w64(&w, r->start_us);
    wstr16(&w, &r->method);
    wstr32(&w, &r->uri);
    wstr16(&w, &r->protocol);
    wstr16(&w, &r->scheme);
    wstr16(&w, &r->host);
    wstr16(&w, &r->client_ip);
    wstr16(&w, &r->server_ip);
    wstr16(&w, &r->user);
    wstr16(&w, &r->id);
    wstr16(&w, &r->base_path);
    wheaders(&w, r->headers, r->nheaders, &r->hblock);
    if (r->phase == TSGI_PHASE_LOG) {
        w16(&w, r->log_status);
        w64(&w, r->log_bytes);
        w64(&w, r->log_duration_us);
    }
    return total;
}

size_t tsgi_response_head_size(const tsgi_response_head *h)
{
    int bad = 0;
    size_t n = 4 + s16(&h->reason, &bad) + headers_size(h->headers, h->nheaders, &h->hblock, &bad);
    return frame_size(n, bad);
}

size_t tsgi_encode_response_head(unsigned char *out, const tsgi_response_head *h)
{
    size_t total = tsgi_response_head_size(h);
    wr w = { out + TSGI_HDR_LEN };
    if (!total)
        return 0;
    tsgi_frame_write(out, TSGI_RESPONSE_HEAD, 0, (uint32_t)(total - TSGI_HDR_LEN));
    w16(&w, h->status);
    wstr16(&w, &h->reason);
    w16(&w, h->nheaders);
    wheaders(&w, h->headers, h->nheaders, &h->hblock);
    return total;
}

size_t tsgi_hello_size(size_t secret_len)
{
    return secret_len > 0xffff ? 0 : TSGI_HDR_LEN + 4 + 2 + secret_len;
}

size_t tsgi_encode_hello(unsigned char *out, uint32_t pid, const unsigned char *secret, size_t secret_len)
{
    size_t total = tsgi_hello_size(secret_len);
    wr w = { out + TSGI_HDR_LEN };
    if (!total)
        return 0;
    tsgi_frame_write(out, TSGI_HELLO, 0, (uint32_t)(total - TSGI_HDR_LEN));
    w32(&w, pid);
    w16(&w, (uint16_t)secret_len);
    wraw(&w, secret, secret_len);
    return total;
}

size_t tsgi_decision_size(const tsgi_str *user)
{
    int bad = 0;
    size_t n = 1 + s16(user, &bad);
    return frame_size(n, bad);
}

size_t tsgi_encode_decision(unsigned char *out, uint8_t kind, const tsgi_str *user)
{
    size_t total = tsgi_decision_size(user);
    wr w = { out + TSGI_HDR_LEN };
    if (!total)
        return 0;
    tsgi_frame_write(out, TSGI_DECISION, 0, (uint32_t)(total - TSGI_HDR_LEN));
    w8(&w, kind);
    wstr16(&w, user);
    return total;
}

size_t tsgi_error_size(const tsgi_str *message)
{
    int bad = 0;
    size_t n = 4 + s16(message, &bad);
    return frame_size(n, bad);
}

size_t tsgi_encode_error(unsigned char *out, uint16_t status, uint16_t retry_after, const tsgi_str *message)
{
    size_t total = tsgi_error_size(message);
    wr w = { out + TSGI_HDR_LEN };
    if (!total)
        return 0;
    tsgi_frame_write(out, TSGI_ERROR, 0, (uint32_t)(total - TSGI_HDR_LEN));
    w16(&w, status);
    w16(&w, retry_after);
    wstr16(&w, message);
    return total;
}

size_t tsgi_encode_abort(unsigned char *out, uint8_t reason)
{
    tsgi_frame_write(out, TSGI_ABORT, 0, 1);
    out[TSGI_HDR_LEN] = reason;
    return TSGI_HDR_LEN + 1;
}

size_t tsgi_encode_welcome(unsigned char *out, uint32_t pid)
{
    tsgi_frame_write(out, TSGI_WELCOME, 0, 4);
    put32(out + TSGI_HDR_LEN, pid);
    return TSGI_HDR_LEN + 4;
}

size_t tsgi_encode_empty(unsigned char *out, uint8_t type)
{
    tsgi_frame_write(out, type, 0, 0);
    return TSGI_HDR_LEN;
}

size_t tsgi_encode_body_header(unsigned char *out, size_t len, int flush)
{
    if (len > TSGI_MAX_FRAME)
        return 0;
    tsgi_frame_write(out, TSGI_BODY, flush ? TSGI_BODY_FLUSH : 0, (uint32_t)len);
    return TSGI_HDR_LEN;
}

size_t tsgi_encode_msg(unsigned char *out, size_t outcap, const tsgi_msg *m)
{
    size_t need_len;
    switch (m->type) {
    case TSGI_REQUEST:
        need_len = tsgi_request_size(&m->u.request);
        return need_len && need_len <= outcap ? tsgi_encode_request(out, &m->u.request) : 0;
    case TSGI_RESPONSE_HEAD:
        need_len = tsgi_response_head_size(&m->u.response);
        return need_len && need_len <= outcap ? tsgi_encode_response_head(out, &m->u.response) : 0;
    case TSGI_HELLO:
        need_len = tsgi_hello_size(m->u.hello.secret.len);
        return need_len && need_len <= outcap
                   ? tsgi_encode_hello(out, m->u.hello.pid, (const unsigned char *)m->u.hello.secret.p,
                                       m->u.hello.secret.len)
                   : 0;
    case TSGI_DECISION:
        need_len = tsgi_decision_size(&m->u.decision.user);
        return need_len && need_len <= outcap ? tsgi_encode_decision(out, m->u.decision.kind, &m->u.decision.user) : 0;
    case TSGI_ERROR:
        need_len = tsgi_error_size(&m->u.error.message);
        return need_len && need_len <= outcap
                   ? tsgi_encode_error(out, m->u.error.status, m->u.error.retry_after, &m->u.error.message)
                   : 0;
    case TSGI_BODY:
        need_len = TSGI_HDR_LEN + m->u.body.len;
        if (m->u.body.len > TSGI_MAX_FRAME || need_len > outcap)
            return 0;
        tsgi_encode_body_header(out, m->u.body.len, m->flags & TSGI_BODY_FLUSH);
        if (m->u.body.len)
            memcpy(out + TSGI_HDR_LEN, m->u.body.p, m->u.body.len);
        return need_len;
    case TSGI_ABORT:
        return outcap >= TSGI_HDR_LEN + 1 ? tsgi_encode_abort(out, m->u.abort.reason) : 0;
    case TSGI_WELCOME:
        return outcap >= TSGI_HDR_LEN + 4 ? tsgi_encode_welcome(out, m->u.welcome.pid) : 0;
    case TSGI_END:
    case TSGI_GOAWAY:
    case TSGI_TUNNEL:
        return outcap >= TSGI_HDR_LEN ? tsgi_encode_empty(out, m->type) : 0;
    default:
        return 0;
    }
}
