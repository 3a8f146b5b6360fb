/*
 * tsgi wire protocol v1: frame codec shared by mod_tsgi, the koffi test
 * library and the libFuzzer target. Plain C99, no APR, no allocation:
 * encoders write into a caller buffer sized by the matching *_size(),
 * decoders return views into the input. See ../PROTOCOL.md.
 */
#ifndef TSGI_PROTO_H
#define TSGI_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define TSGI_VERSION 1
#define TSGI_HDR_LEN 8
#define TSGI_MAX_FRAME (1u << 20)
#define TSGI_MAX_HEADERS 0xffff
#define TSGI_UNKNOWN_LENGTH UINT64_MAX
/* Largest u64 the TypeScript side can hold exactly (2^53 - 1). */
#define TSGI_MAX_SAFE_U64 ((UINT64_C(1) << 53) - 1)

enum tsgi_type {
    TSGI_HELLO = 0x01,
    TSGI_REQUEST = 0x02,
    TSGI_BODY = 0x03,
    TSGI_END = 0x04,
    TSGI_ABORT = 0x05,
    TSGI_WELCOME = 0x81,
    TSGI_RESPONSE_HEAD = 0x82,
    TSGI_DECISION = 0x83,
    TSGI_ERROR = 0x84,
    TSGI_GOAWAY = 0x85,
    TSGI_TUNNEL = 0x86
};

enum tsgi_phase { TSGI_PHASE_FULL = 0, TSGI_PHASE_AUTHN = 1, TSGI_PHASE_AUTHZ = 2, TSGI_PHASE_LOG = 3 };

#define TSGI_RF_TLS 0x01
#define TSGI_RF_HAS_BODY 0x02
#define TSGI_RF_AUTHN_DONE 0x04
#define TSGI_RF_AUTHZ_DONE 0x08
/* A WebSocket upgrade mod_tsgi can tunnel: the worker may answer TUNNEL. */
#define TSGI_RF_UPGRADE 0x10
#define TSGI_RF_ALL 0x1f
#define TSGI_BODY_FLUSH 0x01

enum tsgi_abort_reason { TSGI_ABORT_CLIENT_GONE = 1, TSGI_ABORT_TIMEOUT = 2, TSGI_ABORT_TOO_LARGE = 3, TSGI_ABORT_ERROR = 4 };

/* Decoder results. */
#define TSGI_OK 0
#define TSGI_EVERSION (-1)
#define TSGI_ETYPE (-2)
#define TSGI_ETOOBIG (-3)
#define TSGI_ETRUNC (-4)
#define TSGI_ETRAIL (-5)
#define TSGI_EVALUE (-6)
#define TSGI_EFLAGS (-7)

typedef struct {
    const char *p;
    size_t len;
} tsgi_str;

typedef struct {
    tsgi_str name;
    tsgi_str value;
} tsgi_header;

/* A validated header block inside a decoded payload; walk it with tsgi_headers_next. */
typedef struct {
    const unsigned char *p;
    size_t len;
    uint16_t count;
} tsgi_hblock;

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} tsgi_hiter;

typedef struct {
    uint8_t type;
    uint8_t flags;
    uint32_t len;
} tsgi_frame;

typedef struct {
    uint8_t phase;
    uint8_t flags;
    uint16_t client_port;
    uint16_t server_port;
    uint64_t content_length; /* TSGI_UNKNOWN_LENGTH when chunked */
    uint64_t start_us;
    tsgi_str method, uri, protocol, scheme, host, client_ip, server_ip, user, id, base_path;
    /* Encoding reads headers/nheaders; decoding fills hblock (and nheaders). */
    const tsgi_header *headers;
    uint16_t nheaders;
    tsgi_hblock hblock;
    /* phase LOG only */
    uint16_t log_status;
    uint64_t log_bytes;
    uint64_t log_duration_us;
} tsgi_request;

typedef struct {
    uint16_t status;
    tsgi_str reason;  /* empty: the server's standard phrase */
    const tsgi_header *headers;
    uint16_t nheaders;
    tsgi_hblock hblock;
} tsgi_response_head;

/* One decoded message of any type. */
typedef struct {
    uint8_t type;
    uint8_t flags;
    union {
        struct { uint32_t pid; tsgi_str secret; } hello;
        tsgi_request request;
        tsgi_str body;
        struct { uint8_t reason; } abort;
        struct { uint32_t pid; } welcome;
        tsgi_response_head response;
        struct { uint8_t kind; tsgi_str user; } decision;
        struct { uint16_t status; uint16_t retry_after; tsgi_str message; } error;
    } u;
} tsgi_msg;

/* Frame header: parse validates version, reserved byte and size. */
int tsgi_frame_parse(const unsigned char *buf, tsgi_frame *f);
void tsgi_frame_write(unsigned char *buf, uint8_t type, uint8_t flags, uint32_t len);

/* Decodes one payload of the given frame; views point into payload. */
int tsgi_decode(const tsgi_frame *f, const unsigned char *payload, tsgi_msg *m);
/* Next header of a validated block: 1 when one was produced, 0 at the end. */
void tsgi_headers_begin(const tsgi_hblock *b, tsgi_hiter *it);
int tsgi_headers_next(tsgi_hiter *it, tsgi_header *h);
const char *tsgi_strerror(int rc);

/* Encoders: *_size() is the whole frame (header + payload), 0 when the
 * message cannot be encoded (a field or the frame over its limit);
 * tsgi_encode_*() writes exactly that many bytes and returns the count. */
size_t tsgi_request_size(const tsgi_request *r);
size_t tsgi_encode_request(unsigned char *out, const tsgi_request *r);
size_t tsgi_response_head_size(const tsgi_response_head *h);
size_t tsgi_encode_response_head(unsigned char *out, const tsgi_response_head *h);
size_t tsgi_hello_size(size_t secret_len);
size_t tsgi_encode_hello(unsigned char *out, uint32_t pid, const unsigned char *secret, size_t secret_len);
size_t tsgi_decision_size(const tsgi_str *user);
size_t tsgi_encode_decision(unsigned char *out, uint8_t kind, const tsgi_str *user);
size_t tsgi_error_size(const tsgi_str *message);
size_t tsgi_encode_error(unsigned char *out, uint16_t status, uint16_t retry_after, const tsgi_str *message);
size_t tsgi_encode_abort(unsigned char *out, uint8_t reason);     /* 9 bytes */
size_t tsgi_encode_welcome(unsigned char *out, uint32_t pid);     /* 12 bytes */
size_t tsgi_encode_empty(unsigned char *out, uint8_t type);       /* END, GOAWAY, TUNNEL: 8 bytes */
/* BODY frame header; the data follows it (len <= TSGI_MAX_FRAME). */
size_t tsgi_encode_body_header(unsigned char *out, size_t len, int flush);
/* Re-encodes a decoded message (any type) into out; 0 when it does not fit outcap. */
size_t tsgi_encode_msg(unsigned char *out, size_t outcap, const tsgi_msg *m);

#endif
