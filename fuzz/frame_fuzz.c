/* fuzz/frame_fuzz.c: libFuzzer target for the chat frame parser (host/frame.c), both header
 * formats (the first byte's low bit picks u16u16 or u16u32). Whatever
 * the bytes, frame_parse must never read past the buffer, never accept a body above the
 * limit, and always consume a whole frame or nothing. `make fuzz` runs it. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* libFuzzer's entry point; declared for -Wmissing-prototypes (libFuzzer has no header). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t max = size > 0 ? (size_t)data[0] * 64 : 8192; /* the limit varies too */
    size_t off = size > 0 ? 1 : 0;
    enum frame_kind k = size > 0 && (data[0] & 1) ? FRAME_U32 : FRAME_U16;
    size_t head = frame_header_len(k);
    while (off < size) {
        frame f;
        size_t used;
        enum frame_status st = frame_parse(k, data + off, size - off, max, &f, &used);
        if (st == FRAME_MORE) {
            assert(used == 0);
            break;
        }
        if (st == FRAME_TOO_BIG) {
            assert(f.len > max && used == 0);
            break;
        }
        assert(f.len <= max && used == head + (size_t)f.len && used <= size - off);
        assert(f.body == data + off + head);
        off += used;
    }
    return 0;
}
