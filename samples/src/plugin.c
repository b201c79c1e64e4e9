/* rmmscan test sample: a CRT-less DLL with one export. */
#include <windows.h>

__declspec(dllexport) int __cdecl rmmscan_add(int a, int b)
{
    return a + b;
}

BOOL WINAPI DllEntry(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
