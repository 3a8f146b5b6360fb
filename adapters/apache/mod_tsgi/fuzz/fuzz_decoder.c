/*
 * libFuzzer target for the mod_tsgi decoder: treats the input as a stream of
 * frames, as mod_tsgi reads them from a worker. Every frame that decodes must
 * re-encode to the same bytes and decode again (a wrong size or a read past
 * the payload shows up under ASan/UBSan).
 */
#include "tsgi_proto.h"

#include <stdlib.h>
#include <string.h>

static void check_headers(const tsgi_hblock *b)
{
    tsgi_hiter it;
    tsgi_header h;
    unsigned n = 0;
    volatile unsigned char sink = 0;
    tsgi_headers_begin(b, &it);
    while (tsgi_headers_next(&it, &h)) {
        if (h.name.len)
            sink ^= (unsigned char)h.name.p[h.name.len - 1];
        if (h.value.len)
            sink ^= (unsigned char)h.value.p[h.value.len - 1];
        n++;
    }
    if (n != b->count)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    while (size >= TSGI_HDR_LEN) {
        tsgi_frame f;
        tsgi_msg m;
        unsigned char *copy, *out;
        size_t n;
        if (tsgi_frame_parse(data, &f) != TSGI_OK || size - TSGI_HDR_LEN < f.len)
            return 0;
        /* An exact-size heap copy so ASan catches any read past the payload. */
        copy = malloc(f.len ? f.len : 1);
        memcpy(copy, data + TSGI_HDR_LEN, f.len);
        if (tsgi_decode(&f, copy, &m) == TSGI_OK) {
            if (m.type == TSGI_REQUEST)
                check_headers(&m.u.request.hblock);
            if (m.type == TSGI_RESPONSE_HEAD)
                check_headers(&m.u.response.hblock);
            out = malloc(TSGI_HDR_LEN + f.len);
            n = tsgi_encode_msg(out, TSGI_HDR_LEN + f.len, &m);
            if (n != TSGI_HDR_LEN + f.len || memcmp(out, data, n) != 0)
                abort();
            free(out);
        }
        free(copy);
        data += TSGI_HDR_LEN + f.len;
        size -= TSGI_HDR_LEN + f.len;
    }
    return 0;
}
