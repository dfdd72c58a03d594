/* examples/book_inputs.h — the book's chapter-3 input: "Your journey starts
 * with one step", six tokens embedded in 3 dimensions (shape (6, 3)). Shared
 * by examples/ch03_attention.c and the test that checks its values. */
#ifndef TG_BOOK_INPUTS_H
#define TG_BOOK_INPUTS_H

static const float BOOK_INPUTS[6 * 3] = {
    0.43f, 0.15f, 0.89f, /* Your     (x^1) */
    0.55f, 0.87f, 0.66f, /* journey  (x^2) */
    0.57f, 0.85f, 0.64f, /* starts   (x^3) */
    0.22f, 0.58f, 0.33f, /* with     (x^4) */
    0.77f, 0.25f, 0.10f, /* one      (x^5) */
    0.05f, 0.80f, 0.55f, /* step     (x^6) */
};

#endif
