/*
 * Test shim for codec.test.ts and policy.test.ts (loaded with koffi): plain
 * functions over byte buffers and numbers, so TypeScript can drive the C codec
 * and the supervision policy without mirroring their structs.
 */
#include "tsgi_policy.h"
#include "tsgi_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decodes one whole frame; returns TSGI_OK or an error code. */
static int decode_frame(const unsigned char *in, size_t inlen, tsgi_msg *m)
{
    tsgi_frame f;
    int rc;
    if (inlen < TSGI_HDR_LEN)
        return TSGI_ETRUNC;
    rc = tsgi_frame_parse(in, &f);
    if (rc != TSGI_OK)
        return rc;
    if (inlen != TSGI_HDR_LEN + (size_t)f.len)
        return TSGI_ETRAIL;
    return tsgi_decode(&f, in + TSGI_HDR_LEN, m);
}

/* Copies a decoded header block into an array, so re-encoding goes through
 * the array encoder that mod_tsgi uses, not a raw copy. */
static tsgi_header *headers_array(const tsgi_hblock *b)
{
    tsgi_header *h = calloc(b->count ? b->count : 1, sizeof(*h));
    tsgi_hiter it;
    size_t i = 0;
    tsgi_headers_begin(b, &it);
    while (h && i < b->count && tsgi_headers_next(&it, &h[i]))
        i++;
    return h;
}

/* Decode a frame with the C decoder and encode it again with the C encoder.
 * Returns the output length, or a negative TSGI_E* / -100 when out is small. */
int tsgi_test_reencode(const unsigned char *in, size_t inlen, unsigned char *out, size_t outcap)
{
    tsgi_msg m;
    tsgi_header *h = NULL;
    size_t n;
    int rc = decode_frame(in, inlen, &m);
    if (rc != TSGI_OK)
        return rc;
    if (m.type == TSGI_REQUEST) {
        h = headers_array(&m.u.request.hblock);
        m.u.request.headers = h;
    } else if (m.type == TSGI_RESPONSE_HEAD) {
        h = headers_array(&m.u.response.hblock);
        m.u.response.headers = h;
    }
    n = tsgi_encode_msg(out, outcap, &m);
    free(h);
    return n ? (int)n : -100;
}

typedef struct {
    char *p;
    size_t left;
    int overflow;
} sb;

static void put(sb *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(b->p, b->left, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->left) {
        b->overflow = 1;
        b->left = 0;
        return;
    }
    b->p += n;
    b->left -= (size_t)n;
}

/* Strings as hex so the JSON needs no escaping and bytes stay exact. */
static void hex(sb *b, const char *key, const tsgi_str *s)
{
    size_t i;
    put(b, "\"%s\":\"", key);
    for (i = 0; i < s->len; i++)
        put(b, "%02x", (unsigned char)s->p[i]);
    put(b, "\",");
}

static void headers_json(sb *b, const tsgi_hblock *blk)
{
    tsgi_hiter it;
    tsgi_header h;
    int first = 1;
    put(b, "\"headers\":[");
    tsgi_headers_begin(blk, &it);
    while (tsgi_headers_next(&it, &h)) {
        size_t i;
        put(b, first ? "\"" : ",\"");
        for (i = 0; i < h.name.len; i++)
            put(b, "%02x", (unsigned char)h.name.p[i]);
        put(b, "\",\"");
        for (i = 0; i < h.value.len; i++)
            put(b, "%02x", (unsigned char)h.value.p[i]);
        put(b, "\"");
        first = 0;
    }
    put(b, "],");
}

/* One decoded frame as JSON into b (strings hex-encoded, u64 as decimal
 * strings, -1 for unknown length). */
static void describe(sb *b, const tsgi_msg *mp)
{
    const tsgi_msg m = *mp;
    put(b, "{\"type\":%u,\"flags\":%u,", m.type, m.flags);
    switch (m.type) {
    case TSGI_HELLO:
        put(b, "\"pid\":%u,", m.u.hello.pid);
        hex(b, "secret", &m.u.hello.secret);
        break;
    case TSGI_REQUEST: {
        const tsgi_request *q = &m.u.request;
        put(b, "\"phase\":%u,\"rflags\":%u,\"clientPort\":%u,\"serverPort\":%u,", q->phase, q->flags,
            q->client_port, q->server_port);
        if (q->content_length == TSGI_UNKNOWN_LENGTH)
            put(b, "\"contentLength\":\"-1\",");
        else
            put(b, "\"contentLength\":\"%llu\",", (unsigned long long)q->content_length);
        put(b, "\"startUs\":\"%llu\",", (unsigned long long)q->start_us);
        hex(b, "method", &q->method);
        hex(b, "uri", &q->uri);
        hex(b, "protocol", &q->protocol);
        hex(b, "scheme", &q->scheme);
        hex(b, "host", &q->host);
        hex(b, "clientIp", &q->client_ip);
        hex(b, "serverIp", &q->server_ip);
        hex(b, "user", &q->user);
        hex(b, "id", &q->id);
        hex(b, "basePath", &q->base_path);
        headers_json(b, &q->hblock);
        if (q->phase == TSGI_PHASE_LOG)
            put(b, "\"log\":{\"status\":%u,\"bytes\":\"%llu\",\"durationUs\":\"%llu\"},", q->log_status,
                (unsigned long long)q->log_bytes, (unsigned long long)q->log_duration_us);
        break;
    }
    case TSGI_BODY:
        hex(b, "data", &m.u.body);
        break;
    case TSGI_ABORT:
        put(b, "\"reason\":%u,", m.u.abort.reason);
        break;
    case TSGI_WELCOME:
        put(b, "\"pid\":%u,", m.u.welcome.pid);
        break;
    case TSGI_RESPONSE_HEAD:
        put(b, "\"status\":%u,", m.u.response.status);
        hex(b, "reason", &m.u.response.reason);
        headers_json(b, &m.u.response.hblock);
        break;
    case TSGI_DECISION:
        put(b, "\"kind\":%u,", m.u.decision.kind);
        hex(b, "user", &m.u.decision.user);
        break;
    case TSGI_ERROR:
        put(b, "\"status\":%u,\"retryAfter\":%u,", m.u.error.status, m.u.error.retry_after);
        hex(b, "message", &m.u.error.message);
        break;
    default:
        break;
    }
    put(b, "\"end\":true}");
}

/* Describe one whole frame as JSON. Returns 0, a TSGI_E* code, or -100 when out is small. */
int tsgi_test_describe(const unsigned char *in, size_t inlen, char *out, size_t outcap)
{
    tsgi_msg m;
    sb b = { out, outcap, 0 };
    int rc = decode_frame(in, inlen, &m);
    if (rc != TSGI_OK)
        return rc;
    describe(&b, &m);
    return b.overflow ? -100 : 0;
}

/*
 * Describe a byte stream of frames as mod_tsgi reads a worker's reply
 * (tsgi_frame_parse on each header, tsgi_decode on each payload), as a JSON
 * array. Returns the number of frames, a TSGI_E* code for the first bad one,
 * -100 when out is small, or -101 when the stream ends inside a frame.
 */
int tsgi_test_describe_stream(const unsigned char *in, size_t inlen, char *out, size_t outcap)
{
    sb b = { out, outcap, 0 };
    int n = 0;
    put(&b, "[");
    while (inlen > 0) {
        tsgi_frame f;
        tsgi_msg m;
        int rc;
        if (inlen < TSGI_HDR_LEN)
            return -101;
        if ((rc = tsgi_frame_parse(in, &f)) != TSGI_OK)
            return rc;
        if (inlen - TSGI_HDR_LEN < f.len)
            return -101;
        if ((rc = tsgi_decode(&f, in + TSGI_HDR_LEN, &m)) != TSGI_OK)
            return rc;
        put(&b, n ? "," : "");
        describe(&b, &m);
        in += TSGI_HDR_LEN + f.len;
        inlen -= TSGI_HDR_LEN + f.len;
        n++;
    }
    put(&b, "]");
    return b.overflow ? -100 : n;
}

/* The supervision policy (tsgi_policy.h) of one worker slot, as mod_tsgi's supervisor keeps it. */
static int test_crashes;

void tsgi_test_backoff_reset(void)
{
    test_crashes = 0;
}

/* The restart delay (µs) for a worker started at started_us that died at now_us. */
long long tsgi_test_backoff_next(long long started_us, long long now_us)
{
    return (long long)tsgi_backoff_next(&test_crashes, (int64_t)started_us, (int64_t)now_us);
}

int tsgi_test_exit_startup(void)
{
    return TSGI_EXIT_STARTUP;
}
