/* rmmscan test sample: a CRT-less console program that prints one line. */
#include <windows.h>

static const char message[] = "rmmscan test sample: hello\r\n";

void __cdecl start(void)
{
    DWORD written;
    HANDLE out = GetStdHandle(STD_OUTPUT_HANDLE);
    WriteFile(out, message, sizeof message - 1, &written, NULL);
    ExitProcess(0);
}
