/* examples/quickstart.c — the README's API example: a few tensors, one
 * backward, the grads. Compare with the same lines in PyTorch:
 *   torch.manual_seed(123)
 *   x = torch.rand(2, 3); w = torch.rand(3, 2, requires_grad=True)
 *   b = torch.zeros(2, requires_grad=True)
 *   loss = torch.softmax(x @ w + b, dim=-1).pow(2).sum(); loss.backward()
 */
#include "autograd/autograd.h"

int main(void)
{
    tg_generator g;
    tg_manual_seed(&g, 123);
    tg_tensor *x = tg_rand(&g, TG_SHAPE(2, 3));
    tg_tensor *w = tg_set_name(tg_requires_grad(tg_rand(&g, TG_SHAPE(3, 2)), true), "w");
    tg_tensor *b = tg_set_name(tg_requires_grad(tg_zeros(TG_SHAPE(2)), true), "b");

    tg_tensor *y = tg_softmax(tg_add(tg_matmul(x, w), b), -1);
    tg_tensor *loss = tg_sum(tg_pow_scalar(y, 2.0f));
    tg_backward(loss, NULL);

    printf("loss   = "); tg_print(loss);
    printf("w.grad = "); tg_print_grad(w);
    printf("b.grad = "); tg_print_grad(b);
    tg_tape_print(NULL, stdout);

    tg_tape_reset(NULL); /* releases every op output; leaves keep their grads */
    tg_free(x);
    tg_free(w);
    tg_free(b);
    tg_tape_release_default();
    return 0;
}
