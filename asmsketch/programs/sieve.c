#include <stdio.h>
static char comp[50000];
int main(void) { long sum = 0; int count = 0; for (int i = 2; i < 50000; i++) { if (comp[i]) continue; count++; sum += i; for (int j = 2 * i; j < 50000; j += i) comp[j] = 1; } printf("%d %ld\n", count, sum); return 0; }
